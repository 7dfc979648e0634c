"""The SWIM node: membership, probing, suspicion and dissemination as one pure state machine.

Drivers (the asyncio runtime, the simulator, tests) feed it packets and the current time and perform the
effects it returns. It never reads a clock: `tick(now)` runs whatever is due, `next_deadline()` says when to
call it next.

Protocol (SWIM with Lifeguard, as in hashicorp/memberlist):
- every probe interval, ping the next member of a randomized round-robin order (by default aligned across
  members, so each member is probed once per interval: see probe_schedule); without an ack within the probe
  timeout, ask `indirect_checks` members to ping it for us (they nack if they hear nothing); without any ack
  by the end of the interval, suspect it;
- a suspicion becomes a death after a timeout that shrinks as independent members confirm it (Lifeguard);
  the suspect refutes by raising its incarnation;
- membership changes and state updates are rumors: piggybacked on every packet with a retransmit limit,
  pushed to `fanout` peers each gossip interval, and (optionally) forwarded at once when fresh;
- `gossip.mode` says who starts an exchange: `push` sends rumors unasked; `pull` asks `fanout` peers for
  theirs each pull round and sends rumors only in answers (no piggybacking, no forwarding; its one exception is
  our own leave, pushed with whatever we still hold, since a member that is gone answers nobody); `push-pull`
  pushes, and asks in its gossip packets; pull requests back off while they bring nothing, name to each peer
  once the state payloads the asker holds (core/pull_ids.py: the responder remembers, and answers leave those
  out), and draw no answer when the responder has nothing to send; pull mode asks every member in turn, and
  first an asker whose request named what we lack (core/pull_targets.py);
- a full push-pull sync with a random member every push-pull interval, and with seeds on join, repairs
  whatever rumors missed;
- state rumors, with `gossip.broadcast: tree` in push modes, travel along an epidemic broadcast tree instead
  (core/plumtree.py: eager pushes, lazy IHAVEs, GRAFT/PRUNE), about one copy per member; members not known to
  read tree messages still get them from the queue above.

The Node is one class, its concerns one module each (mixins over core/node_base.py, which says why):
core/probing.py (probes, indirect probes, relays), core/membership_rumors.py (alive/suspect/dead, refutation,
reaping), core/push_pull.py (full sync), core/flooding.py (the rumor queue and gossip rounds),
core/pulling.py (pull requests and answers), core/tree_dissemination.py (state rumors on the tree),
core/digest_riders.py (convergence digests on the wire), core/reader_offers.py (which types a peer reads),
core/peer_choice.py (whom we talk to), core/sending.py (the send path). This module keeps the driver's entry
points: packets in, ticks, the next deadline, joining and leaving, local writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gossip_agent.core import codec
from gossip_agent.core.critical import direct_reach
from gossip_agent.core.digest_riders import DigestRiders
from gossip_agent.core.effects import Effect, JoinSeeds, LeaveDone, SyncWith
from gossip_agent.core.flooding import Flooding
from gossip_agent.core.membership import Member
from gossip_agent.core.membership_rumors import MembershipRumors
from gossip_agent.core.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Graft,
    IHave,
    MemberSnapshot,
    MemberState,
    Nack,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    PingReq,
    Prune,
    PullRequest,
    ShortIds,
    ShortKind,
    StateRumor,
    Suspect,
)
from gossip_agent.core.node_base import LAZY_TICKS, LEAVE_LINGER, NEVER, StateDelegate, meta_size
from gossip_agent.core.peer_choice import PeerChoice
from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE, message_id
from gossip_agent.core.probing import Probing
from gossip_agent.core.pulling import BUSY_ROUNDS, Pulling
from gossip_agent.core.push_pull import PushPullSync, split_push_pull
from gossip_agent.core.reader_offers import ReaderOffers
from gossip_agent.core.sending import Sending
from gossip_agent.core.topology_state import ZONE_META_KEY
from gossip_agent.core.tree_dissemination import TreeDissemination

# What drivers and tests import from here (defined beside the concern they belong to).
__all__ = ["BUSY_ROUNDS", "LEAVE_LINGER", "Node", "StateDelegate", "meta_size", "split_push_pull"]

# Rumor message classes, as a tuple: isinstance with a tuple is cheaper than with a union, per message.
_RUMOR_TYPES = (Alive, Suspect, Dead, StateRumor)
_TREE_TYPES = (IHave, Graft, Prune)
# The follow-up sync after a join, in gossip intervals (0.5 s with LAN timings).
_FOLLOWUP_SYNC_INTERVALS = 2.5


class Node(Probing, MembershipRumors, PushPullSync, Flooding, Pulling, TreeDissemination, DigestRiders,
           ReaderOffers, PeerChoice, Sending):
    """One member's view of the cluster. Not thread-safe; one driver owns it.

    Constructed as NodeBase is (core/node_base.py: config, address, rng, now, delegate, ...)."""

    # -- views -----------------------------------------------------------------------------------------
    def members(self) -> list[MemberSnapshot]:
        return [m.snapshot() for m in self.table]

    def counts(self) -> dict[MemberState, int]:
        return self.table.counts()

    def member(self, name: str) -> MemberSnapshot | None:
        m = self.table.get(name)
        return m.snapshot() if m else None

    def member_state(self, name: str) -> MemberState | None:
        """How we see `name` now (None: not in our table, e.g. never heard of or reaped)."""
        m = self.table.get(name)
        return m.state if m is not None else None

    @property
    def join_attempts(self) -> int:
        """Join attempts made so far (`join` calls)."""
        return self._join.attempts

    def queue_depth(self) -> int:
        """Rumors waiting for (re)transmission."""
        return len(self.queue)

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy; probes slow down by a factor (1 + score)."""
        return self.awareness.score

    @property
    def joined(self) -> bool:
        """True once another member is known alive (or no seeds were given)."""
        return not self._join.active or self.table.n_alive > 1


    # -- driver entry points ---------------------------------------------------------------------------
    def observe_wall_clock(self, wall: float, now: float) -> None:
        """The wall clock read `wall` at `now`: aligned probing numbers its rounds by the wall clock, which
        members share, so the driver reports it before ticking (and a wall-clock step is followed)."""
        self._clock_offset = wall - now
        if math.isfinite(wall) and 0 < wall < 1e13:  # a sane wall clock (seconds since 1970) bounds digest numbers
            self.root_digests.observe_wall(now, int(wall * 1000))

    def set_immediate_forward(self, enabled: bool) -> None:
        """Switch immediate forwarding of fresh rumors on or off (an experiment's knob; the only setting a
        running core takes: everything else in `config` is fixed at construction)."""
        self._immediate_forward = enabled

    def set_zone(self, zone: str | None, now: float) -> list[Effect]:
        """Our zone (validated by core.topology.parse_zone; None: unknown) changed, e.g. the zone file was
        rewritten: it goes into our metadata, re-announced with a bumped incarnation."""
        if not self.topology.set_local_zone(zone):
            return []
        meta = dict(self.meta)
        if zone is None:
            meta.pop(ZONE_META_KEY, None)
        else:
            meta[ZONE_META_KEY] = zone
            if meta_size(meta) > self.config.gossip.max_meta_bytes:
                # Known here (our own peer choice uses it) but not announced, and no stale zone left in our
                # metadata; update_meta would raise, and the zone was already set above.
                self.stats["zone_not_announced"] += 1
                meta.pop(ZONE_META_KEY)
        return self.update_meta(meta, now)

    def join(self, seeds: Sequence[Address], now: float) -> list[Effect]:
        """One join attempt: push-pull (join=True) with each seed address. Call it once at start with the
        resolved seeds; the Node asks for later attempts itself (`JoinSeeds`: failed attempts with backoff, and
        rejoins after losing every peer, see core/joining.py), and the driver answers each with this call."""
        targets = [s for s in dict.fromkeys(seeds) if s != self.addr]
        # A join attempt means this node was given seeds: it counts as joined only once another member is alive,
        # even when no seed resolved to anyone else this round (DNS records of peers still starting); otherwise
        # a pod that started before its peers' DNS names existed stayed alone, "joined" and ready, for good.
        self._join.attempted(targets, now)
        if targets:
            # One follow-up sync with a random member shortly after: members that joined at the same moment
            # through other seeds were not in the seed's view yet, and would otherwise wait for a rumor.
            self._followup_sync_at = now + _FOLLOWUP_SYNC_INTERVALS * self.config.gossip.interval
            # Announce ourselves too (memberlist does): a second, independent source of our Alive rumor.
            self._announce_self(now)
        return [SyncWith(s, join=True) for s in targets]

    def bootstrap(self, members: Sequence[MemberSnapshot], now: float) -> None:
        """Install a known view quietly: no events, no rumors, no join (the simulator's pre-joined start,
        which lets steady-state runs at thousands of members skip the N² rumors of a join from nothing).
        Rows about us or already known are ignored; metadata mappings are shared, not copied."""
        for row in members:
            if row.name == self.name or row.name in self.table:
                continue
            self.table.add(Member(row.name, row.addr, row.incarnation, row.state, row.meta, now))
            self._probe_order.append(row.name)
        self.rng.shuffle(self._probe_order)
        self._join.active = True  # seeded as far as rejoining goes: it joins the seeds again if it loses everyone

    def sync_failed(self, to: Address, now: float) -> list[Effect]:
        self.stats["sync_failed"] += 1
        self._join.sync_failed(to, now, self.joined)
        return []

    def leave(self, now: float) -> list[Effect]:
        """Broadcast our graceful leave. The driver keeps running (ticks, packets) until `LeaveDone`."""
        if self.leaving:
            return []
        self.leaving = True
        self.send_budget.refill(now)
        self._leave_until = now + self._leave_linger
        me = self.table.get(self.name)
        assert me is not None
        self.table.set_state(me, MemberState.LEFT, now)
        self._probe = None
        out: list[Effect] = []
        self._enqueue(Dead(self.name, self.incarnation, self.name), None)
        self._forward(now, None, out)
        return out

    def broadcast_state(self, payload: bytes, now: float, *, key: str | None = None,
                        critical: bool = False) -> list[Effect]:
        """Send a state rumor. Tree path: pushed at once to the tree's eager neighbours (a `critical` one also
        to `fanout` random others), announced to the lazy ones. Flood path: queued (piggybacked, bounded
        retransmits; a later rumor with the same `key` replaces an unsent earlier one) and forwarded at once
        if configured. `critical`: ahead of every other rumor, to more peers, and marked on the wire so relays
        keep it ahead."""
        out: list[Effect] = []
        self.send_budget.refill(now)
        rumor = StateRumor(payload, critical)
        skey = None if key is None else "s:" + key
        if self._tree_on:
            ident = message_id(payload)
            self.tree.receive(ident, None, now)
            # A critical write goes straight to every live member in clusters up to CRITICAL_DIRECT
            # (core/critical.py), suspects too (memberlist gossips to them): a suspect is most often alive (a false
            # suspicion under load, or one about to be refuted), and left out it waited for the tree's next hop.
            extra = [m.name for m in self._random_peers(direct_reach(self.table.n_live - 1), exclude=None,
                                                          live_only=True)
                     if m.name not in self.tree.eager] if critical else []
            if self._tree_spread(ident, rumor, None, now, out, extra=extra):
                # The flood fallback waits one gossip interval for the tree to deliver (core/held_floods.py).
                dropped = self._held_floods.hold((rumor, skey), now + self.config.gossip.interval)
                if dropped:  # older agents get those by anti-entropy only
                    self.stats["tree_held_floods_dropped"] += dropped
            return out
        self._enqueue(rumor, None, key=skey, sid=self._note_held(payload, now))
        self._fresh_rumor(now, None, out)
        return out

    def update_meta(self, meta: Mapping[str, str], now: float) -> list[Effect]:
        """Change our metadata: bumps our incarnation and broadcasts a fresh Alive."""
        if meta_size(meta) > self.config.gossip.max_meta_bytes:
            raise ValueError(f"metadata is larger than gossip.maxMetaBytes ({self.config.gossip.max_meta_bytes} B)")
        if dict(meta) == self.meta:
            return []
        self.meta = dict(meta)
        self.send_budget.refill(now)
        self.incarnation = min(self.incarnation + 1, codec.MAX_INCARNATION)
        self._announce_self(now)
        out: list[Effect] = []
        self._fresh_rumor(now, None, out)
        return out

    def handle_packet(self, packet: Packet, src: Address, now: float) -> list[Effect]:
        out: list[Effect] = []
        self.send_budget.refill(now)
        fresh = False
        # Rumors first: an Ack to a Ping in the same packet then carries whatever they made us say
        # (e.g. the refutation of a suspicion piggybacked on the Ping by Lifeguard's buddy system).
        # Whether the packet came from its named sender's table host, as the table stood before its rumors: a
        # forged duplicate push "from" a tree neighbour must not count against that neighbour's link.
        from_host = self._at_table_host(packet.sender, src)
        rest = False  # whether the packet holds anything besides rumors (a tree push holds payloads only)
        for msg in packet.messages:
            if not isinstance(msg, _RUMOR_TYPES):
                rest = True
            elif self._apply_rumor(msg, now, packet.sender, out, from_host=from_host):
                fresh = True
        if rest:
            self._handle_rest(packet, src, now, out)
        elif not from_host:
            self._from_table_host(packet.sender, src)  # (counts it)
        self._repair_digests(packet.sender, now, out)
        if self._refuted:
            # Answer an accusation to the accuser at once: it is the member about to spread it further.
            # (Not in pull mode: the refutation waits for pulls like any rumor.)
            self._refuted = False
            sender = self.table.get(packet.sender)
            if sender is not None and self._pushes:
                self._send(sender.addr, sender.name, [], out)
        if fresh and not self.leaving:
            self._fresh_rumor(now, packet.sender, out)
        return out

    def _handle_rest(self, packet: Packet, src: Address, now: float, out: list[Effect]) -> None:
        """`handle_packet` for a packet's messages other than rumors (applied first): digests, probes, pull
        requests, coordinates and the tree's control messages. A packet of payloads alone (most packets under
        a stream of writes: the tree's pushes) skips this."""
        reply_pull: Address | None = None
        held: frozenset[int] = frozenset()  # what a short pull request says the asker holds
        whole = False  # a short pull request from the asker's own host (core/pulling.py `_answer_pull`)
        # What a packet shows about its sender's release (core/readers.py) counts only from the sender's table
        # host: a spoofed packet raising an older agent's level would make us send it packets it drops whole.
        shows = self._from_table_host(packet.sender, src)
        self._on_digests(packet, now, shows)  # before a Ping: its Ack then answers them
        grafted: set[int] = set()  # ids answered to this packet's grafts (at most MAX_GRAFT_ANSWER in all)
        # Whether a GRAFT asking for payloads came before in this packet: a PRUNE after it ends a fetch, which cut
        # no tree link (core/plumtree.py EAGER_STALL_LAZY, CUT_WATCH_LAZY).
        fetched = False
        rows_taken = False  # one message of second-hand coordinates a packet (an honest one holds one at most)
        coordinate_taken = False  # and one coordinate of the sender's own
        # One ping and one ping-req a packet: an honest packet holds one at most, and each draws an answer (a
        # datagram of 200 pings naming a member's own address drew 3.5x its bytes of acks with riders there).
        pinged = relayed = acked = False
        for msg in packet.messages:
            if isinstance(msg, _RUMOR_TYPES):  # digests: _on_digests
                continue
            if isinstance(msg, Ping):
                if pinged:
                    self.stats["pings_over_limit"] += 1
                    continue
                pinged = True
                self._on_ping(self._compact_ping(msg, packet.sender, src, shows) if msg.compact else msg, src, out,
                              now)
            elif isinstance(msg, Ack):
                if acked:
                    # An honest packet holds one ack at most: more are guesses at our sequence numbers.
                    self.stats["acks_over_limit"] += 1
                    continue
                acked = True
                self._on_ack(msg, packet.sender, now, out)
            elif isinstance(msg, PingReq):
                if relayed:
                    self.stats["pings_over_limit"] += 1
                    continue
                relayed = True
                self._on_ping_req(msg, now, out)
            elif isinstance(msg, Nack):
                self._on_nack(msg, packet.sender)
            elif isinstance(msg, PullRequest):
                reply_pull = self._pull_reply_address(packet.sender)
            elif isinstance(msg, ShortIds):
                fetched = fetched or (msg.kind == ShortKind.GRAFT and bool(msg.ids))
                if self._on_short_ids(msg, packet.sender, out, now, grafted, shows=shows):
                    reply_pull = self._pull_reply_address(packet.sender)
                    # What the asker holds is believed only from its host: a forged request would have us
                    # count our rumors as sent to it, and it would never get them (until anti-entropy).
                    if shows:
                        self._held_claims.note(packet.sender, msg.ids, now)
                        held = self._held_claims.held(packet.sender, now, self._held_window())
                        self._pull_hint(packet.sender, msg.ids, now)
                        # It named everything it got since it last asked us (unless at the cap): answer it all.
                        whole = len(msg.ids) < MAX_IDS_PER_MESSAGE
            elif isinstance(msg, NetCoordinate):
                # From live members only: a coordinate of a member we hold dead or left would bring it back to
                # the RTT table and /v1/coordinates (it refutes first if it is alive after all). One a packet, as
                # an honest one holds: each is checked and renumbered in every peer's walk of updates.
                if coordinate_taken:
                    self.stats["coordinates_over_limit"] += 1
                elif not shows and self.table.is_live(packet.sender):  # not from its host: a name anyone can claim
                    self.stats["coordinates_not_from_member_host"] += 1
                elif packet.sender != self.name and self.table.is_live(packet.sender):
                    coordinate_taken = True
                    self.topology.on_coordinate(packet.sender, msg, now, shows=shows)
                else:
                    self.stats["coordinates_unknown_member"] += 1
            elif isinstance(msg, PeerCoordinates):
                if rows_taken:
                    self.stats["coordinate_rows_over_limit"] += 1
                elif not shows and self.table.is_live(packet.sender):  # (rows of a forged name: every walk)
                    self.stats["coordinates_not_from_member_host"] += 1
                elif packet.sender != self.name and self.table.is_live(packet.sender):
                    rows_taken = True
                    self.topology.on_rows(packet.sender, msg, now, self.table.is_live, self.name, shows=shows)
                else:
                    self.stats["coordinates_unknown_member"] += 1
            elif isinstance(msg, _TREE_TYPES):
                self._on_tree_message(msg, packet.sender, now, out, grafted, shows=shows, src_host=src[0],
                                      fetched=fetched)
                fetched = fetched or (isinstance(msg, Graft) and bool(msg.ids))
        if reply_pull is not None and len(self.queue):
            # (A probe's request names at most MAX_PROBE_PULL_IDS: one packet, as a long-form request gets.)
            self._answer_pull(packet.sender, reply_pull, held, out, whole=whole and not (pinged or acked))

    def tick(self, now: float) -> list[Effect]:
        """Run everything due at `now`: probes, probe timeouts, gossip, push-pull, suspicion expiry, reaping."""
        out: list[Effect] = []
        self.send_budget.refill(now)
        self._tick_probe(now, out)
        if len(self._hellos):
            self._tick_hello(now, out)
        self._tick_relays(now, out)
        self._tick_suspicions(now, out)
        self._tick_reap(now, out)
        gossip_tick = now >= self._next_gossip
        if gossip_tick:
            self._gossip_ticks += 1
            if not self._pushes:
                # One peer at a time, `fanout` a pull interval: each request names what the answers before it
                # brought (asked at once, every holder answered with the same write).
                self._gossip(now, out)
                self._next_gossip = now + self._next_pull_interval() / self.config.gossip.fanout
            else:
                if len(self.queue) or self.root_digests.has_fresh() or self.root_digests.summary_due():
                    self._gossip(now, out)
                self._next_gossip = self._next_beat(now)
        if self._tree_on:
            self._flood_held(now, out)
            # Announcements leave at the gossip tick, after the round's packets took theirs along (plumtree.tick).
            self._tick_tree(now, out, flush=gossip_tick and self._gossip_ticks % LAZY_TICKS == 0)
        if now >= self._followup_sync_at:
            self._followup_sync_at = NEVER
            peer = self._random_peers(1, exclude=None, live_only=True, alive_only=True)
            if peer:
                out.append(SyncWith(peer[0].addr, join=False))
        if now >= self._next_reconnect:
            self._reconnect(now, out)
        if now >= self._next_push_pull and not self.leaving:
            self._next_push_pull = now + self._push_pull_interval()
            peer = self._random_peers(1, exclude=None, live_only=True)
            if peer:
                out.append(SyncWith(peer[0].addr, join=False))
        rejoin = self._join.due(now, self.joined, self.leaving)
        if rejoin is not None:
            self.stats["rejoin_requests" if rejoin else "join_retries"] += 1
            out.append(JoinSeeds(rejoin))
        if self.leaving and not self._leave_done and (now >= self._leave_until or not self._leave_spreading()):
            self._leave_done = True
            out.append(LeaveDone())
        return out

    def _leave_spreading(self) -> bool:
        """Our leave rumor (and whatever else is queued) still has someone to go to."""
        return len(self.queue) > 0 and self.table.n_live > 0

    def next_deadline(self) -> float:
        """The earliest time at which `tick` has something to do (a time already past: at once).
        The driver asks after every packet: plain comparisons, no generator or `min` call per term."""
        leaving = self.leaving
        deadline = self._followup_sync_at
        if not leaving and self._next_push_pull < deadline:
            deadline = self._next_push_pull
        if leaving:
            if not self._leave_done:
                at = self._leave_until if self._leave_spreading() else 0.0
                if at < deadline:
                    deadline = at
        elif self._join.active and self.table.n_alive <= 1:  # (`not self.joined`, inlined: the hot path)
            at = self._join.deadline(False)
            if at < deadline:
                deadline = at
        if self._former and self._next_reconnect < deadline:
            deadline = self._next_reconnect
        if not leaving and len(self._hellos):
            at = self._hellos.next_deadline()
            if at < deadline:
                deadline = at
        probe = self._probe
        if probe is None:
            # While a probe is in flight the next one waits for its end (below), even if its round began.
            if not leaving and len(self._probe_order) and self._next_probe < deadline:
                deadline = self._next_probe
        else:
            at = probe.end_at if probe.indirect_sent else probe.indirect_at
            if at < deadline:
                deadline = at
        if self._next_gossip < deadline and (
                len(self.queue) or self.config.gossip.mode == "pull" or self.root_digests.has_fresh()
                or self.root_digests.summary_due()):
            deadline = self._next_gossip
        if self._tree_on:
            at = self.tree.next_deadline()
            if at < deadline:
                deadline = at
            at = self._coalesce.next_deadline()
            if at < deadline:
                deadline = at
            at = self._held_floods.next_deadline()
            if at < deadline:
                deadline = at
            if (self._tree_fill_at < deadline and self.tree.wanted() and not leaving
                    and self.table.n_alive - 1 > self.tree.picked):
                deadline = self._tree_fill_at  # (members left to pick: else no idle wake-ups)
        for relay in self._relays.values():
            if relay.nack_at < deadline:
                deadline = relay.nack_at
            if relay.expire_at < deadline:
                deadline = relay.expire_at
        if self._suspicions_due < deadline:
            deadline = self._suspicions_due
        if self._graveyard:
            at = self._graveyard[0][0] + self.config.membership.reap_after
            if at < deadline:
                deadline = at
        return deadline
