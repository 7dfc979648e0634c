"""Pull requests and their answers (`gossip.mode` pull and push-pull).

An asker names the state payloads it holds (short ids, core/pull_ids.py) so answers leave those out; requests
back off while they bring nothing and return to the full pace on news; pull mode asks every member in turn, and
first an asker whose request named what we lack (core/pull_targets.py). Answers go only to the asker's table
address (no reflection) and only when they carry rumors.
"""

from __future__ import annotations

from gossip_agent.core.broadcast import retransmit_limit
from gossip_agent.core.digest_riders import digests_size
from gossip_agent.core.digests import DIGEST_ALLOWANCE
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import Address, MemberState, Message, Packet, PullRequest, Rumor, ShortIds, ShortKind
from gossip_agent.core.node_base import NodeBase
from gossip_agent.core.plumtree import message_id, short_id
from gossip_agent.core.readers import SHORT_IDS

# At most this many ids on a probe's pull request (a ping must stay small; a gossip round's request names the rest).
MAX_PROBE_PULL_IDS = 16
# Pull mode asks at the full pace for this many rounds (of `fanout` requests) after news arrived, then backs off.
BUSY_ROUNDS = 2
SHORT_PULL_FRAME = 6  # a short pull request's bytes besides its ids: array, type, kind, bin header (up to bin16)
# Most packets one pull request is answered with (pull mode; push-pull answers with one, its pushes carry the
# rest). WHY: in pull mode an answer is a rumor's only way out, and a member is asked about `fanout` times a
# round, so one packet per answer capped what a member could take in at about `fanout / interval` packets a
# second: one 1 KiB value each, 15 writes/s on LAN timings. At 100 writes/s the queues only grew (t100 ~9 s in
# the simulator and ~10 s on loopback, N=10). An answer now holds every queued rumor the asker lacks, up to this
# many packets. Only to a live asker whose short request came from its own host and named what it holds
# (`_answer_pull`): each rumor still goes at most once to it, only to its table address (`_pull_reply_address`),
# and the packets are charged to the send budget like any other.
MAX_ANSWER_PACKETS = 8


class Pulling(NodeBase):
    """The Node's pull requests (whom to ask, what to name, how often) and its answers to others'."""

    def _answer_pull(self, asker: str, to: Address, held: frozenset[int], out: list[Effect], *,
                     whole: bool = False) -> None:
        """Answer `asker`'s pull request at `to`, its table address (`_pull_reply_address`), with queued rumors
        other than those it said it holds (`held`), digests beside them. Only an answer that carries rumors goes:
        an empty one was a packet for digests that ride on the next packet to the asker anyway.

        In pull mode, up to MAX_ANSWER_PACKETS packets when `whole` (a short request from the asker's own host
        that named everything it got since it last asked us, not riding on a probe) and the asker is a live
        member: each rumor then goes to it once (core/broadcast.py `take` records it). Else one packet: a
        long-form or probe request names few or none of the ids the asker holds, so more packets would mostly
        carry copies it has; and a member we hold dead gets no record of what it was sent, so each further
        packet would repeat the same rumors and spend their transmits (a forged request naming a dead member
        retired a write after two requests)."""
        reserve = DIGEST_ALLOWANCE if asker in self._digest_readers else 0
        limit = self._answer_limit()
        whole = whole and not self._pushes and self.table.is_live(asker)
        # A whole answer's first packet takes the queue's order (fewest transmits, newest first: fresh writes
        # spread first); its further packets are a random choice among the rest of what the asker lacks
        # (`take(shuffle=)`). The members an asker asks one after another each answer before it can name what
        # the others sent, and all in the queue's order they sent it the same rumors. Loopback, N=10, 100
        # writes/s of 1 KiB, two runs each: queue order 2.89-2.94x the byte floor, t100 median 670-703 ms;
        # every packet random 2.09-2.24x, 1,074-1,255 ms; this 1.93-2.00x, 976-986 ms.
        rumors = self._take(self._budget(reserve), asker, limit=limit, held=held)
        large: list[Rumor] = []
        if not rumors and reserve and len(self.queue):
            # A rumor too large to sit beside the digest allowance: in a packet of its own.
            large = self._take(self._budget(), asker, limit=limit, held=held)
            if large:
                self._charge(0)
                out.append(Send(to, Packet(self.name, tuple(large))))
        if rumors:
            digests = self._digests_for(asker)
            self._charge(digests_size(digests))
            out.append(Send(to, Packet(self.name, (*rumors, *digests))))
        if not (rumors or large) or not whole:
            return
        for _ in range(MAX_ANSWER_PACKETS - 1):  # pull mode: the rest of what the asker lacks (see the constant)
            more = self._take(self._budget(), asker, limit=limit, held=held, spread=True)
            if not more:
                return
            self._charge(0)
            out.append(Send(to, Packet(self.name, tuple(more))))

    def _probe_pull(self, to: str, now: float) -> list[Message]:
        """Pull mode: a probe's ping, and its ack, ask too (a short request to a member that reads them), for the
        few bytes of a request instead of a packet of its own: idle, the gossip rounds' own requests then back
        off to one a probe interval (_next_pull_interval), so a member asks about three times a probe interval
        as before, in one packet of its own instead of three (bench_load, 8 agents idle: see bench/README.md)."""
        if self._pushes or self.leaving or not self.readers.reads(to, SHORT_IDS):
            return []
        ids = self._recent_ids.ids_for(to, now, self._held_window())
        if len(ids) <= MAX_PROBE_PULL_IDS:
            self._recent_ids.asked(to, now)  # (else the next request to `to` names them all again)
        return [ShortIds(ShortKind.PULL, ids[:MAX_PROBE_PULL_IDS])]

    def _pull_hint(self, asker: str, ids: tuple[int, ...], now: float) -> None:
        """Pull mode: a request from `asker` named payloads we do not hold, so it has news for us: ask it next,
        within a request interval, at the full pace (core/pull_targets.py); each asker at most once per cycle's
        worth of rounds (`_pull_target`: the ids are its word). Only asking, never a push: the ids
        are in every request anyway (they keep answers to it free of what it holds). After a quiet spell the
        first write spread only as fast as backed-off members happened to ask its writer."""
        if self._pushes or self.leaving or not any(sid not in self._recent_ids for sid in ids):
            return
        self._pull_next = asker
        self._pull_activity = True
        self._busy_pulls = BUSY_ROUNDS * self.config.gossip.fanout
        g = self.config.gossip
        self._next_gossip = min(self._next_gossip, now + g.interval / g.fanout)

    def _pull_target(self) -> list[Member]:
        """Pull mode's next peer to ask: every member in turn (core/pull_targets.py), the dead included as in
        gossip (a member wrongly declared dead hears of it); under topology-aware choice, as that chooses."""
        hinted, self._pull_next = self._pull_next, None
        self._pull_rounds += 1
        if self._pull_rounds >= len(self._probe_order):  # a cycle's worth of rounds: hints count once again
            self._pull_rounds = 0
            self._pull_hints_followed.clear()
        if hinted is not None and hinted not in self._pull_hints_followed and self.table.is_live(hinted):
            member = self.table.get(hinted)
            if member is not None:
                self._pull_hints_followed.add(hinted)
                return [member]
        if self.topology.active():
            return self._random_peers(1, exclude=None, live_only=False)
        name = self._pull_order.next(self._probe_order, self.rng,
                                     lambda n: self._eligible(n, self.name, tuple(MemberState)) is not None)
        member = self.table.get(name) if name is not None else None
        return [member] if member is not None else []

    def _pull_reply_address(self, sender: str) -> Address | None:
        """Where a pull request is answered: the asker's address in our table, never the address written
        inside the request. Answering that one let anyone point an MTU-sized answer at a third party with one
        small forged packet (a reflector). A name we do not know gets no answer (counted): a joiner's push-pull
        brings it everything, and a member we think dead is still answered (it may need to learn that, and
        refute)."""
        member = self.table.get(sender)
        # Our own name is a forgery too: answering it marked rumors as sent to us, and the last live peer went
        # without them.
        if member is None or sender == self.name:
            self.stats["pull_unknown_sender"] += 1
            return None
        return member.addr

    def _note_held(self, payload: bytes, now: float, source: str | None = None) -> int | None:
        """A state payload we hold (received from `source`, new or not, or written here) off the tree: its short
        id, noted for our pull requests (core/pull_ids.py). None in push mode, which never asks."""
        if self.config.gossip.mode == "push":
            return None
        sid = short_id(message_id(payload))
        self._recent_ids.add(sid, now, source)
        return sid

    def _held_window(self) -> float:
        """How long a payload we hold is named to peers we ask, and an asker's claims are remembered: as long
        as a rumor may wait in a holder's queue (core/pull_ids.py): its retransmit limit in rounds, a round
        being `fanout` requests, or a probe interval once idle pulls have backed off."""
        g = self.config.gossip
        rounds = max(g.interval * g.fanout, self.config.membership.probe_interval)
        return retransmit_limit(g.retransmit_mult, self._rumor_population) * rounds

    def _pull_request(self, to_name: str, held: tuple[int, ...]) -> PullRequest | ShortIds:
        """A pull request to `to_name`: to a member known to read short ids, one that names what we hold
        (`held`; on the tree, nothing: state travels the tree, not the queues that answers come from), ~20
        bytes smaller than the old kind, which every other member gets."""
        if self.readers.reads(to_name, SHORT_IDS):
            return ShortIds(ShortKind.PULL, held)
        return PullRequest(self.name, self.addr)

    def _answer_limit(self) -> int | None:
        """How many pull answers carry a rumor before it is retired (None: the queue's retransmit limit).

        In pull mode answers are a rumor's only way out, and every member asks `fanout` peers per round, so
        each member is asked about `fanout` times a round, often by peers that already hold the rumor: with
        the push limit a rumor would be retired after a round or so, and the last members would miss it. It
        stays for the retransmit limit in rounds instead (still never sent twice to one peer, and retired
        once every live member has it). push-pull keeps the push limit: its pushes spread the rumor already."""
        if self._pushes:
            return None
        n = self._rumor_population
        return retransmit_limit(self.config.gossip.retransmit_mult, n) * self.config.gossip.fanout

    def _next_pull_interval(self) -> float:
        """After a pull round (pull mode: one request; `fanout` of them a round, spread over it): the wait
        until the next one. A round after which nothing fresh arrived (no answer carried news; in push-pull,
        our queue is empty too) doubles it, up to the probe interval, so an idle cluster pulls rarely; any news
        puts it back to the gossip interval. In pull mode what we still hold for others is no reason to ask
        (rumors wait in queues until every member asked for them: asking at full rate while they did cost
        most of the requests after a burst of writes); news within the last BUSY_ROUNDS rounds is."""
        g = self.config.gossip
        busy = len(self.queue) if self._pushes else self._busy_pulls > 0
        # Idle, pull mode's own requests back off to one a probe interval (the tick divides by fanout): every
        # probe asks too, and news found by any request or named by an asker puts the pace back.
        probe = self.config.membership.probe_interval * (1 if self._pushes else g.fanout)
        self._busy_pulls = max(0, self._busy_pulls - 1)
        if self._pull_activity or busy:
            self._pull_interval = g.interval
        else:
            ceiling = max(g.interval, probe)
            self._pull_interval = min(self._pull_interval * 2, ceiling)
        self._pull_activity = False
        return self._pull_interval
