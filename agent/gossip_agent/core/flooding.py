"""Flood dissemination: rumors queued with a retransmit limit (core/broadcast.py), piggybacked on every packet,
pushed to `fanout` peers each gossip round, and forwarded at once when fresh (memberlist's broadcast.go and
gossip loop).

Membership rumors always travel this way; state rumors too on the flood path (`gossip.broadcast: flood`), to
members not known to read the broadcast tree, and in pull mode, where rumors leave only in answers to pull
requests (core/pulling.py). The gossip ticker keeps its phase: rounds out of turn do not move it.
"""

from __future__ import annotations

import math

from gossip_agent.core import codec
from gossip_agent.core.digest_riders import digests_allowance, digests_size
from gossip_agent.core.digests import DIGEST_ALLOWANCE
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import Packet, Rumor, ShortIds, StateRumor
from gossip_agent.core.node_base import NodeBase
from gossip_agent.core.plumtree import SHORT_ID_BYTES
from gossip_agent.core.pulling import BUSY_ROUNDS, SHORT_PULL_FRAME
from gossip_agent.core.send_budget import budget_stats

# After an immediate forward, the next gossip round comes this fraction of an interval later.
_EARLY_GOSSIP_FRACTION = 0.25


class Flooding(NodeBase):
    """The Node's rumor queue and its gossip rounds: what goes in, which peers a round picks, immediate forwards."""

    def _enqueue(self, rumor: Rumor, source: str | None, *, key: str | None = None, low: bool = False,
                 sid: int | None = None) -> None:
        if key is None and not isinstance(rumor, StateRumor):
            key = "m:" + rumor.name
        # Critical: membership changes about known members, and state writes flagged critical.
        critical = not low and (rumor.critical if isinstance(rumor, StateRumor) else True)
        self._critical_fresh |= critical
        self.queue.enqueue(rumor, codec.message_size(rumor), key=key, source=source, low=low, critical=critical,
                           sid=sid)
        budget_stats(self.stats, self.queue)

    def _relay_class(self, rumor: StateRumor, source: str | None, now: float) -> StateRumor:
        """A new state rumor from a peer, as we relay it: a critical one over its sender's share of the critical
        rate (core/critical_relay.py; `source` None: not from its named sender's host) as a normal one."""
        if not rumor.critical or self._critical_relay.admit(
                source, self.config.state.critical_writes_per_second, now):
            return rumor
        self.stats["critical_downgraded_relay"] += 1
        return StateRumor(rumor.payload)

    def _take_beside_digests(self, used: int, to: str) -> tuple[list[Rumor], bool]:
        """Rumors for a packet to `to` that keeps the digest allowance free; when none fits there but a
        rumor waits (a state payload near the inline limit, e.g. a 1 KiB value, is larger than what the
        allowance leaves), the packet goes without digests instead (True): else such writes never left."""
        rumors = self._take(self._budget(used + DIGEST_ALLOWANCE), to)
        if rumors or not len(self.queue):
            return rumors, False
        return self._take(self._budget(used), to), True

    def _gossip(self, now: float, out: list[Effect]) -> None:
        mode = self.config.gossip.mode
        asks = mode == "pull" or (mode == "push-pull" and now >= self._next_pull_at)
        pulled = False
        # The newest ids, as many as fit beside the digest allowance: gossip.mtu bounds every packet (128 ids
        # are 512 B: a 576-byte mtu was overshot by up to 40 %).
        room = max(0, (self._budget(DIGEST_ALLOWANCE) - SHORT_PULL_FRAME) // SHORT_ID_BYTES)
        # Fresh convergence digests go out with the round's packets to peers that read them (so a root
        # published after the writes stopped still spreads at gossip speed), and once the table has settled
        # one packet a round asks a peer for reconciliation (core/digests.py) for a few rounds.
        # (A pull-mode call is one request of a round, `fanout` of them a round: only the round's first asks, as
        # one packet a round does in the push modes; every request asked, and replies followed, 3x as often.)
        ask = self.root_digests.summary_due() and (
            mode != "pull" or self._gossip_ticks % self.config.gossip.fanout == 0)
        for peer in self._pull_target() if mode == "pull" else self._gossip_targets(self.config.gossip.fanout):
            # What we hold that `peer` may not know (core/pull_ids.py; on the tree, nothing: state travels the
            # tree, not the queues that answers come from).
            held = self._recent_ids.ids_for(peer.name, now, self._held_window()) \
                if asks and not self._tree_on else ()
            told = len(held) <= room  # all of it: the next request to `peer` names only what comes after
            held = held[:room]
            pull = (self._pull_request(peer.name, held),) if asks else ()
            pull_size = codec.message_size(pull[0]) if pull else 0
            rumors, large = self._take_beside_digests(pull_size, peer.name) if mode != "pull" else ([], False)
            reader = peer.name in self._digest_readers
            fresh, asking = reader and self.root_digests.has_fresh(), reader and ask
            if rumors or mode == "pull" or fresh or asking:
                digests = [] if large else self._digests_for(peer.name, ping=asking)
                ask = ask and not (asking and not large)
                if rumors or pull or digests:
                    riders = self._tree_riders(peer.name, self._budget(
                        pull_size + digests_allowance(digests) + sum(codec.message_size(r) for r in rumors)))
                    self._charge(pull_size + digests_size(digests) + sum(codec.message_size(m) for m in riders))
                    out.append(Send(peer.addr, Packet(self.name, (*rumors, *pull, *riders, *digests))))
                    self.stats["gossip_packets"] += 1
                    if pull:
                        pulled = True
                        if told and isinstance(pull[0], ShortIds):  # (a long-form request names nothing)
                            self._recent_ids.asked(peer.name, now)
        if pulled and mode == "push-pull":
            # The pull slot is spent only by a round that sent a request (a round with nothing to send kept it
            # for the next packet that goes).
            self._next_pull_at = now + self._next_pull_interval()
        if ask:
            self.root_digests.summary_sent()  # no peer to ask this round: spent anyway (a few rounds, then quiet)

    def _gossip_targets(self, k: int) -> list[Member]:
        """A gossip round's `k` peers: on the tree, lazy neighbours with announcements due first (in random
        order; their ids ride on the round's packet instead of a packet of their own at the flush: at 8
        agents and 10 writes/s, ~40 % of the announcement packets), then random members (the dead included,
        so a member wrongly declared dead hears of it). Under topology-aware choice, as that chooses."""
        if not self._tree_on or self.topology.active():
            return self._random_peers(k, exclude=None, live_only=False)
        due = self.tree.announcing()
        self.rng.shuffle(due)
        chosen: dict[str, Member] = {}
        for name in due:
            member = self.table.get(name)
            if len(chosen) < k and member is not None and self.table.is_live(name):
                chosen[name] = member
        if len(chosen) < k:
            for m in self._random_peers(k + len(chosen), exclude=None, live_only=False):
                if len(chosen) < k and m.name not in chosen:
                    chosen[m.name] = m
        return list(chosen.values())

    def _fresh_rumor(self, now: float, source: str | None, out: list[Effect]) -> None:
        """A rumor new to us was queued (heard from `source`, or ours): push modes forward it at once if
        configured; pull mode only pulls at the gossip interval again, since the cluster is busy (push-pull's
        pull requests too)."""
        self._pull_activity = True
        self._busy_pulls = BUSY_ROUNDS * self.config.gossip.fanout
        if self._pushes:
            if self._next_gossip < now:
                # Idle until now, the gossip deadline was not watched (next_deadline) and went stale: move it
                # to the ticker's next beat, keeping its phase. Left in the past, it made the first rumor after
                # a quiet spell leave at once at every member, an immediate forward whatever the setting.
                self._next_gossip = self._next_beat(now)
            if self._immediate_forward:
                self._forward(now, source, out)
            if self._pull_interval > self.config.gossip.interval:
                self._pull_interval = self.config.gossip.interval
                self._next_pull_at = min(self._next_pull_at, now)
            return
        self._pull_interval = self.config.gossip.interval
        self._next_gossip = min(self._next_gossip, now + self._pull_interval / self.config.gossip.fanout)

    def _next_beat(self, now: float) -> float:
        """The gossip ticker's first beat after `now`. Rounds out of turn (the early round after an immediate
        forward, below) do not move the beat: counted from the early round, the next regular round came a
        whole interval later at every member at once, so a member both rounds missed waited 1.25 intervals
        (1,000-member simulations, flood, 200 ms interval: the last member a median 258 ms after the write over
        7 seeds; on the beat 97 ms over 11)."""
        interval = self.config.gossip.interval
        if interval <= 0:
            return now
        beat = self._gossip_beat + (math.floor((now - self._gossip_beat) / interval) + 1) * interval
        return beat if beat - now > interval * 1e-6 else beat + interval  # (rounding: never `now` itself)

    def _forward(self, now: float, exclude: str | None, out: list[Effect]) -> None:
        """Immediate forwarding: fresh rumors go to `fanout` peers now, not at the next gossip tick.

        A one-shot flood with fanout f misses each member with probability about e^-f (5% for f = 3), so a
        second, early gossip round follows a quarter interval later: together they miss about e^-2f, and a
        member that both missed waits for the regular tick. Under a steady stream of fresh rumors, rounds come
        at most every quarter interval (each still bounded by the queue's retransmit limits)."""
        self._next_gossip = min(self._next_gossip, now + self.config.gossip.interval * _EARLY_GOSSIP_FRACTION)
        # A critical rumor among the fresh ones goes to twice the fanout (core/broadcast.py: CRITICAL).
        fanout = self.config.gossip.fanout * (2 if self._critical_fresh else 1)
        self._critical_fresh = False
        for peer in self._random_peers(fanout, exclude=exclude, live_only=False):
            rumors, large = self._take_beside_digests(0, peer.name)
            if rumors:
                digests = [] if large else self._digests_for(peer.name)
                self._charge(digests_size(digests))
                out.append(Send(peer.addr, Packet(self.name, (*rumors, *digests))))
                self.stats["forwarded_packets"] += 1
