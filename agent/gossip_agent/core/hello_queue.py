"""Whom to greet next: one hello to each member we learn (or learn again), paced.

WHY. Newer message types go to a member only once it has shown, FIRST-HAND (a packet of its own from its own
host), that it reads them (core/readers.py): an older agent drops a whole packet holding a type it does not
know. The broadcast tree's flood fallback, too, leaves out only members that showed so (core/node.py
`_flood_to_others`): anything weaker could be forged. Evidence used to come only from probes and the offers
beside them, and a member probes each other about once per N probe intervals: for the first minute of a
50-member cluster (every rollout, every bench) EVERY write took the flood fallback, about a third of all
deliveries came by the flood and each payload arrived some three times.

So when a member enters our table live (new, or back after `Readers.reset`: suspicion, death, a new address,
a restart), the Node sends it one hello: a packet holding only our highest offer (core/node.py
`_hello_offer`), which an older agent drops alone. A member that reads it shows us its level by answering
with its own offer (`Node._on_short_ids`), so both ends know within a round trip, without waiting for a probe.

PACING. A newcomer to a cluster of ~240 members (the most that greet, see SCALE) learns them all in one
push-pull: it must not send 240 packets at once. Hellos leave through a token bucket (core/token_bucket.py):
at most HELLO_BURST at once, then HELLO_RATE a second (so at most HELLO_BURST + HELLO_RATE * T in any T
seconds; 240 members take ~4.6 s). Above that size nobody greets, and the queue drains through skips.
Whatever the tree gossips meanwhile still reaches everyone (the flood fallback covers the members not yet
greeted). At its turn a member that needs no hello any more -- it showed its level meanwhile, we already
offered to it (a probe's offer, or our answer to its own hello), it died, left or was reaped -- is skipped
at no cost (the caller's `skip`), so in a cluster where everyone greets everyone most turns are skips.

SCALE. Greetings cost about 3.4 small packets per pair of members once (hello, answer, answer to the
answer): O(N) per member, O(N^2) for the cluster (1.7M packets at N=1,000, ~68 MB, about the flood fallback of
4,000 writes of 1 KiB). What they save is the flood fallback, which costs a writer at most the rumor queue's
retransmit limit of copies per write (mult * ceil(log10(N + 1))) beside the tree's N - 1: 16 % of the byte
floor at N=50, 1.6 % at N=1,000. So a member greets only while that limit is at least FLOOD_SHARE of the
other members (`hellos_pay`: up to ~240 members at the default retransmitMult of 4); above that, levels are
learnt from probes as before, and queued names leave at no cost.

ONE HOST. The members we greet are names and addresses that gossip told us: a forger who injects many fake
members all at one victim's address (other ports, or many names at one host) would make every agent a
reflector of up to HELLO_RATE packets a second toward that host. So hellos to one host (IP) are capped:
at most HOST_CAP + `vouched(host)` within any HOST_WINDOW seconds, where `vouched` (the caller's) counts the
members at that host that have shown themselves FIRST-HAND (a reader level, raised only by a packet from the
member's own host, core/readers.py). A host with none of our agents thus gets at most HOST_CAP hellos a
window from each agent (see HOST_CAP). The cap bounds the rate, not the total: each agent still greets each
fake member once, as it probes each; what it stops is a burst of 50 a second per agent aimed at one host. A
host of real agents (a local cluster, every agent on 127.0.0.1) gets one more a window for each that showed
itself, and its members greet the newcomer too (which vouches for them and makes their own hellos skips),
so its joins are not slowed (a 50-agent local cluster's join holds none back). A name over the cap waits,
parked with its host's other names (their order kept), and is counted once (`held_back`); it goes when the
window frees room (or more members there show themselves, seen at the caller's next tick), or leaves at no
cost like any other (`skip`, `discard`).

A host is its KEY (core/hosts.py `host_key`, the caller's): its IPv4 address, or its IPv6 /64, so one victim
is one host however gossip spells it -- and the wire takes only canonical IP literals anyway (core/codec.py
`valid_host`: `127.1`, `::ffff:127.0.0.1`, `::1%5` or a name each used to get a cap of their own). The BOUND
at a shared host: its names wait in arrival order, so where real agents share a host with F forged members
queued ahead of them (a local cluster or a bench on 127.0.0.1 whose gossip port a forger reaches; pods have
IPs of their own) a real one's hello waits about F * HOST_WINDOW / HOST_CAP seconds (F / 2). Its own hello to
us, our probes' offers and the flood fallback still reach it meanwhile, and each real member there that
answers adds room; and the wait ends once the forged names stop being live (their probes go unanswered):
dead, they all leave in one `due` at no cost, and the real one goes within a HOST_WINDOW. (Serving first the
names whose Alive came first-hand, from their own host, would lift that; the caller does not yet know which
did.)

IPv4 IS NOT GROUPED by network, as IPv6 is by /64 (core/hosts.py `host_key`). The /64 is there because one
IPv6 host may answer at any address of its /64, so a forger could spell one victim 2^64 ways; an IPv4 host has
the addresses it was given, and the 254 of a /24 are, as a rule, 254 hosts, each with a cap of its own. Grouping
them would defend a network rather than a host (not what the cap is for: per host, it matches what the probes
of the same fake members send anyway), and would put a Kubernetes node's pods under one cap (one /24 podCIDR
per node with flannel or kubenet; a single-node kind cluster is all one /24): there hellos would wait whenever
the members have not shown themselves yet (a newcomer's first push-pull, a rollout's new pods), and agents of
an older version, which never show a level, would take the group's room without ever adding to it.

BOUNDED. At most `max_pending` names waiting, parked ones included (the caller's membership.maxMembers; it
adds only members of its table and discards reaped ones); past that a name is refused (`add` says so; the
Node counts it as `hellos_refused`): it still learns of us by the offers beside our probes. The send times
kept per host are those of the last HOST_WINDOW (at most HELLO_BURST + HELLO_RATE * HOST_WINDOW in all).
Pure: every call takes `now`; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from gossip_agent.core.token_bucket import Rate, TokenBucket

HELLO_RATE = 50.0
"""Hellos a second once the burst is spent: a hello is one small packet (~30 B) to a member that answers with
one; 50/s greets a 50-member cluster in about a second, costs at most ~3 KB/s both ways, and keeps a
newcomer to ~240 members (the most that greet, `hellos_pay`) to ~4.6 s of greetings instead of one burst of
240 packets."""

HELLO_BURST = 10.0
"""Hellos that may leave at once (a quiet agent's bucket is full)."""

FLOOD_SHARE = 0.05
"""Greet while the flood fallback's copies per write are at least this share of the other members (the byte
floor): below it the fallback costs less than the greetings' O(N^2) packets would save (see SCALE)."""

HOST_CAP = 10
"""Hellos to one host (IP) within HOST_WINDOW beyond one per member there that showed itself first-hand (see
ONE HOST). As many as the burst, so a newcomer's first burst into a local cluster (all on one IP, nobody
vouched for yet) is never held; with HOST_WINDOW that is 2 a second from each agent to a host with none of
ours: 25x below HELLO_RATE, and of the order of what the probes of the same fake members send it anyway (a
fake member is probed like any other, about once a probe interval in the cluster, and each probe that goes
unanswered is a ping, `indirect_checks` helpers' pings and a TCP attempt)."""

HOST_WINDOW = 5.0
"""Seconds over which HOST_CAP counts (a sliding window): a probe interval's several, so a host that never
answers gets 2 hellos a second from each agent, while a host of real agents gets room as fast as its members
show themselves."""

_WHOLE = 1.0 - 1e-9  # a token earned up to float rounding counts as earned (no extra wake-ups for 1e-16)


class HelloQueue:
    """Members waiting for a hello, first come first served, released at most `rate` a second and at most
    `host_cap` (+ the members there that showed themselves) to one host within `host_window` (ONE HOST)."""

    __slots__ = ("_at", "_bucket", "_host_cap", "_host_window", "_parked", "_parked_at", "_pending", "_sent",
                 "_wake", "_wake_for_token", "held_back", "max_pending")

    def __init__(self, max_pending: int, now: float, *, rate: float = HELLO_RATE, burst: float = HELLO_BURST,
                 host_cap: int = HOST_CAP, host_window: float = HOST_WINDOW) -> None:
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending!r}")
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if host_cap < 1:
            raise ValueError(f"host_cap must be >= 1, got {host_cap!r}")
        if not math.isfinite(host_window) or host_window <= 0:
            raise ValueError(f"host_window must be a finite number > 0, got {host_window!r}")
        self.max_pending = max_pending
        self._bucket = TokenBucket(Rate(rate, max(1.0, burst)), now)
        self._at = now if math.isfinite(now) else 0.0  # the latest `now` seen (never back): bucket and windows
        self._host_cap = host_cap
        self._host_window = host_window
        self._pending: dict[str, str] = {}  # name -> its host, insertion-ordered: the oldest waits least
        self._parked: dict[str, dict[str, None]] = {}  # host over its cap -> its names waiting, in their order
        self._parked_at: dict[str, str] = {}  # parked name -> its host
        # When `due` may hand out a parked name: a host's window frees room (`_wake`), or the next token
        # (`_wake_for_token`: a host with room waited for one). Set by `due`.
        self._wake = math.inf
        self._wake_for_token = False
        # host -> when we greeted it within the window (oldest first); hosts in the order last greeted, so the
        # ones whose window has passed are at the front.
        self._sent: dict[str, deque[float]] = {}
        self.held_back = 0
        """Names the host cap held back, each once a wait (the caller's `hellos_held`)."""

    def __len__(self) -> int:
        return len(self._pending) + len(self._parked_at)

    def __contains__(self, name: object) -> bool:
        return name in self._pending or name in self._parked_at

    def add(self, name: str, host: str) -> bool:
        """Queue `name`, at `host`, for one hello (a name already waiting keeps its place; at a new host, it
        counts against that one). False if the queue is full."""
        if name in self._pending:
            self._pending[name] = host
            return True
        parked_at = self._parked_at.get(name)
        if parked_at == host:
            return True
        if parked_at is not None:
            self._unpark(name, parked_at)
        elif len(self) >= self.max_pending:
            return False
        if host in self._parked:  # its host is over the cap: it waits behind that host's other names
            self._park(name, host)
        else:
            self._pending[name] = host
        return True

    def discard(self, name: str) -> None:
        """`name` was reaped: no hello."""
        if self._pending.pop(name, None) is None:
            host = self._parked_at.get(name)
            if host is not None:
                self._unpark(name, host)

    def _park(self, name: str, host: str) -> None:
        self._parked.setdefault(host, {})[name] = None
        self._parked_at[name] = host
        self.held_back += 1

    def _unpark(self, name: str, host: str) -> None:
        names = self._parked[host]
        del names[name]
        del self._parked_at[name]
        if not names:
            del self._parked[host]

    def due(self, now: float, skip: Callable[[str], bool], vouched: Callable[[str], int]) -> list[str]:
        """The names to greet now, oldest first: each costs a token; names for which `skip` says yes leave the
        queue without one. A name whose host had its cap's worth within the window (`vouched(host)`: how many
        members there showed themselves first-hand, asked only of a host at HOST_CAP) is parked until its host
        has room; names left waiting keep their order."""
        bucket = self._bucket
        bucket.refill(now)
        if math.isfinite(now) and now > self._at:
            self._at = now
        at = self._at  # (never back, always finite: a bad clock neither frees a host's window nor fills it)
        window, cap = self._host_window, self._host_cap
        horizon = at - window
        sent = self._sent
        while sent:  # forget the hosts not greeted within the window
            host = next(iter(sent))
            if sent[host][-1] > horizon:
                break
            del sent[host]
        greet: list[str] = []
        wake = math.inf
        for_token = False

        def full(host: str) -> bool:
            times = sent.get(host)
            if times is None:
                return False
            while times and times[0] <= horizon:
                times.popleft()
            return len(times) >= cap and len(times) >= cap + vouched(host)

        def greeted(name: str, host: str) -> None:
            bucket.spend(1.0)
            times = sent.pop(host, None)
            if times is None:
                times = deque()
            times.append(at)
            sent[host] = times  # (now the last greeted)
            greet.append(name)

        # Parked hosts first: their names waited longest.
        for host in list(self._parked):
            names = self._parked[host]
            while names:
                name = next(iter(names))
                if skip(name):
                    self._unpark(name, host)
                    continue
                if full(host):
                    wake = min(wake, sent[host][0] + window)
                    break
                if bucket.tokens < _WHOLE:
                    for_token = True
                    break
                self._unpark(name, host)
                greeted(name, host)
        pending = self._pending
        while pending:
            name = next(iter(pending))
            host = pending[name]
            if skip(name):
                del pending[name]
                continue
            if host in self._parked:  # behind its host's parked names (a skip or a park costs no token)
                del pending[name]
                self._park(name, host)
                continue
            if bucket.tokens < _WHOLE:
                break
            del pending[name]
            if full(host):
                self._park(name, host)
                wake = min(wake, sent[host][0] + window)
            else:
                greeted(name, host)
        self._wake, self._wake_for_token = wake, for_token
        return greet

    def next_deadline(self) -> float:
        """When `due` would have a name to hand out, to skip or to park (`math.inf`: nobody waits). A time
        already past means at once."""
        tokens = self._bucket.tokens
        token_at = self._at if tokens >= _WHOLE else self._at + (1.0 - tokens) / self._bucket.rate.per_second
        at = math.inf
        if self._parked:
            at = min(self._wake, token_at) if self._wake_for_token else self._wake
        if self._pending and token_at < at:
            at = token_at
        return at


def hellos_pay(n_live: int, flood_copies: int) -> bool:
    """Whether greeting pays in a cluster of `n_live` live members (ourselves included) whose flood fallback
    sends at most `flood_copies` copies of a write (the rumor queue's retransmit limit): see SCALE."""
    return flood_copies >= FLOOD_SHARE * (n_live - 1)
