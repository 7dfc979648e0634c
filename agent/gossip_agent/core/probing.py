"""Failure detection: SWIM's probes with Lifeguard's corrections (memberlist's state.go probe half).

Every probe interval we ping one member (by default the target of an aligned round: core/probe_schedule.py,
core/probe_order.py; else round-robin over a shuffled order). Without an ack within the probe timeout,
`indirect_checks` members are asked to ping it for us (they nack if they hear nothing); without any ack by the
end of the interval it is suspected (core/membership_rumors.py takes the accusation from there). Lifeguard:
missing nacks and failed probes raise our own health score (core/awareness.py), which stretches our probe
interval and timeouts. We also run the indirect probes others ask of us (relays).

Acks and nacks count only with their exact (sequence number, member) pair: numbers are unguessable
(core/probe_seq.py) and the sender's name is checked, so a forged ack cannot keep a dead member alive.
"""

from __future__ import annotations

import bisect

from gossip_agent.core import probe_order, probe_schedule
from gossip_agent.core.digest_riders import digests_size
from gossip_agent.core.effects import Effect, Send, SyncWith, TcpProbe
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import (
    Ack,
    Address,
    Digest,
    DigestSummary,
    MemberState,
    Message,
    Nack,
    Packet,
    Ping,
    PingReq,
    Suspect,
)
from gossip_agent.core.node_base import NEVER, NodeBase, ProbeInFlight, RelayedPing
from gossip_agent.core.readers import COMPACT

# Relays nack a little before the prober's indirect window closes, so the nack arrives in time to count.
_NACK_FRACTION = 0.8
# Indirect probes we run for others at once at most (ping-reqs beyond are dropped and counted).
_MAX_RELAYS = 256


class Probing(NodeBase):
    """The Node's probe rounds, their indirect probes and timeouts, and the relays we run for others."""

    def tcp_probe_ok(self, seq: int, now: float) -> list[Effect]:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self.stats["tcp_fallback_acks"] += 1
            self._probe = None
        return []

    def tcp_probe_refused(self, seq: int, now: float) -> list[Effect]:
        """The target's host refused the stream connection: nothing listens on its port, so the probe has
        failed for certain. Suspect now instead of at the end of the probe interval (detection gets up to
        half an interval faster); as the target is to blame, our own health score is left alone."""
        probe = self._probe
        out: list[Effect] = []
        if probe is not None and probe.seq == seq:
            self._probe = None
            self.stats["tcp_refused"] += 1
            self._probe_failed(probe, now, out, blame_self=False)
        return out

    def _next_seq(self) -> int:
        """A sequence number for a ping of ours (a probe, or one relayed for a ping-req): unguessable
        (core/probe_seq.py), and none in use by an outstanding probe or relay."""
        while True:
            seq = self._seqs.next()
            if seq not in self._relays and (self._probe is None or self._probe.seq != seq):
                return seq

    def _next_round_at(self, now: float) -> float:
        """`now`-clock time at which our next aligned round starts."""
        interval, wall = self.config.membership.probe_interval, now + self._clock_offset
        r = probe_schedule.round_of(wall, self._probe_phase, interval)
        return probe_schedule.round_start(r + 1, self._probe_phase, interval) - self._clock_offset

    def _aligned_target(self, now: float) -> Member | None:
        """This round's target on the shared ring; None if we already probed in this round."""
        ring = self.table.ring()
        n = len(ring)
        key = self.table.ring_key(self.name)
        me = bisect.bisect_left(ring, (key, self.name)) if key is not None else n
        if n < 2 or me >= n or ring[me][1] != self.name:
            return self._next_target()  # not on the ring (yet): fall back to the shuffled order
        r = probe_schedule.round_of(now + self._clock_offset, self._probe_phase, self.config.membership.probe_interval)
        if r == self._last_round:
            return None
        self._last_round = r
        zone_target = self._zone_ring_target(ring, r)
        if zone_target is not None:
            return zone_target
        return self.table.get(ring[(me + probe_schedule.shift(r, n - 1)) % n][1])

    def _zone_ring_target(self, ring: list[tuple[int, str]], r: int) -> Member | None:
        """With topology awareness, round `r`'s target along our zone's own ring (core/probe_order.py); None
        in a far round, or when we have no zone ring to probe along."""
        topo = self.topology
        if topo.mode != "aware" or probe_order.far_round(
                r, max(probe_order.FAR_PROBE_SHARE, topo.policy.cross_zone_fraction)):
            return None
        if self._zone_rings_for is None or self._zone_rings_for[0] is not ring \
                or self._zone_rings_for[1] != self._zone_version:
            def zone_of(name: str) -> str | None:
                m = self.table.get(name)
                return None if m is None else topo.zone_of(m.meta)
            self._zone_rings = probe_order.zone_groups(ring, zone_of)
            self._zone_rings_for = (ring, self._zone_version)
        group = self._zone_rings.get(self.name)
        if group is None or len(group) < 2 or len(group) == len(ring):
            return None
        key = self.table.ring_key(self.name)
        me = bisect.bisect_left(group, (key, self.name)) if key is not None else len(group)
        if me >= len(group) or group[me][1] != self.name:
            return None
        return self.table.get(group[(me + probe_schedule.shift(r, len(group) - 1)) % len(group)][1])

    def _next_target(self) -> Member | None:
        """Round-robin over a shuffled order (SWIM's bounded detection time), reshuffled every pass."""
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                name = self._probe_order[self._probe_index]
                self._probe_index += 1
                m = self.table.get(name)
                if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                    return m
            self._probe_order = [n for n in self._probe_order if n in self.table]
            self.rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _tick_probe(self, now: float, out: list[Effect]) -> None:
        m = self.config.membership
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now >= probe.indirect_at:
                self._send_indirect(probe, now, out)
            if now >= probe.end_at:
                self._probe = None
                self._probe_failed(probe, now, out)
        if self.leaving or now < self._next_probe or self._probe is not None:
            return
        aligned = m.probe_schedule == "aligned"
        if aligned and self.awareness.score == 0:
            self._next_probe = self._next_round_at(now)
        else:
            # Lifeguard stretches the interval of an unhealthy member: it skips rounds, others still probe.
            self._next_probe = now + self.awareness.scale(m.probe_interval)
        target = self._aligned_target(now) if aligned else self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = ProbeInFlight(seq, target.name, target.incarnation,
                             indirect_at=now + self.awareness.scale(m.probe_timeout),
                             end_at=now + self.awareness.scale(m.probe_interval))
        msgs: list[Message] = [Ping(seq, target.name, self.name, self.addr, self.readers.reads(target.name, COMPACT))]
        if target.state == MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the suspect directly, so it can refute at once.
            msgs.append(Suspect(target.name, target.incarnation, self.name))
        msgs += self._probe_pull(target.name, now)
        self.stats["probes"] += 1
        lower = self._probe_offers(target, now, out)
        self._send(target.addr, target.name, msgs, out)
        own = self.root_digests.get(self.name)
        if lower and target.name not in self._digest_readers and own is not None:
            # Not known to read digests (yet): our row and summary in a packet apart, which an older agent
            # drops alone; a newer one answers with what we lack and is a reader from then on.
            offer_digests: list[Digest | DigestSummary] = [own, self.root_digests.summary(True)]
            self._charge(digests_size(self._count_digests("offer", offer_digests)))
            out.append(Send(target.addr, Packet(self.name, tuple(offer_digests))))
            self.stats["digest_offers"] += 1

    def _send_indirect(self, probe: ProbeInFlight, now: float, out: list[Effect]) -> None:
        probe.indirect_sent = True
        target = self.table.get(probe.target)
        if target is None:
            return
        helpers = self._random_peers(self.config.membership.indirect_checks, exclude=probe.target, live_only=True,
                                     alive_only=True)
        for helper in helpers:
            req = PingReq(probe.seq, target.name, target.addr, self.name, self.addr, want_nack=True)
            self._send(helper.addr, helper.name, [req], out)
        probe.expected_nacks = len(helpers)
        probe.helpers = tuple(h.name for h in helpers)
        self.stats["ping_reqs"] += len(helpers)
        if self.config.membership.tcp_fallback_probe:
            out.append(TcpProbe(target.addr, target.name, probe.seq))

    def _probe_failed(self, probe: ProbeInFlight, now: float, out: list[Effect], *, blame_self: bool = True) -> None:
        self.stats["probe_failures"] += 1
        # Lifeguard: if helpers did not even nack, the problem is likely us; without helpers, assume us too.
        if not blame_self:
            pass
        elif probe.expected_nacks:
            self.awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self.awareness.apply_delta(1)
        target = self.table.get(probe.target)
        if target is None or target.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return
        # Probing a suspect that still does not answer is our own independent confirmation (memberlist too).
        # The accusation names the incarnation the probe was sent to: if the member refuted meanwhile, it is
        # stale and ignored, instead of re-accusing the refutation (which made incarnations climb).
        self._apply_rumor(Suspect(target.name, probe.incarnation, self.name), now, None, out)

    def _compact_ping(self, msg: Ping, sender: str, src: Address, shows: bool) -> Ping:
        """A compact ping (type 22) filled in (still marked compact): its source is the packet's sender, and its
        ack goes to the sender's table address if the packet came from that host (the port may be mapped), else
        where the packet came from: a member back at a new address before its Alive reached us must still get
        its ack, and a packet naming a member from another host gets the bare ack there, as a forged whole ping
        naming its own address does (`_on_ping`). From the member's host it shows the compact forms."""
        member = self.table.get(sender)
        if shows and member is not None:
            self.readers.show(sender, COMPACT)
        addr = member.addr if member is not None and self._at_table_host(sender, src) else src
        return Ping(msg.seq, msg.target, sender, addr, True)

    def _on_ping(self, msg: Ping, src: Address, out: list[Effect], now: float) -> None:
        """A whole ping names its ack's address; a compact one (filled in by `_compact_ping`) did not, and its
        bare ack goes to the datagram's source."""
        if msg.target != self.name:
            self.stats["ping_wrong_target"] += 1
            return
        ack = Ack(msg.seq, self.table.digest)
        if not self._at_table_address(msg.source, msg.source_addr):
            # A ping names where its ack goes. To an address that is not the claimed member's table address (a
            # forged ping pointing at a victim; or, for a moment, a member at a new address we have not heard of
            # yet) goes the bare ack: no rumors, digests, announcements, coordinate rows, not even our coordinate
            # (+35 B: a forged ping drew 2.3x its size with it, ~20x with the riders). An honest prober always
            # writes its table address; it only misses one RTT sample while its move spreads.
            # A compact ping names no address: its bare ack goes to the datagram's source, which anyone can spoof,
            # and without our table digest (0: not given, 1 byte instead of 5) it is never larger than the ping
            # (with an empty sender name and the digest it was 1.44x the ping at a victim). What it loses: a
            # prober that differs from us syncs with us a probe later.
            self._send_bare(msg.source_addr, [Ack(msg.seq) if msg.compact else ack], out)
            self.stats["acks_bare"] += 1
            return
        riders = self._coordinate_for(msg.source, now, msg.source_addr, out)
        self._send(msg.source_addr, msg.source, [ack, *riders, *self._probe_pull(msg.source, now)], out)

    def _on_ping_req(self, msg: PingReq, now: float, out: list[Effect]) -> None:
        m = self.config.membership
        if len(self._relays) >= _MAX_RELAYS:
            # Each relay is remembered for a probe interval and scanned by next_deadline: a flood of ping-reqs
            # must not grow that without bound (honest ones: a few per failed probe in the cluster).
            self.stats["ping_reqs_over_cap"] += 1
            return
        seq = self._next_seq()
        # Both addresses come from the request: what we send to one that is not its member's table address is
        # the bare ping / ack / nack (a forged ping-req must not make us a reflector either).
        origin = msg.source if self._at_table_address(msg.source, msg.source_addr) else None
        self._relays[seq] = RelayedPing(msg.source_addr, msg.seq,
                                   nack_at=now + m.probe_timeout * _NACK_FRACTION if msg.want_nack else NEVER,
                                   expire_at=now + m.probe_interval, origin=origin, target=msg.target)
        if self._at_table_address(msg.target, msg.target_addr):
            compact = self.readers.reads(msg.target, COMPACT)
            self._send(msg.target_addr, msg.target, [Ping(seq, msg.target, self.name, self.addr, compact)], out)
        else:
            self._send_bare(msg.target_addr, [Ping(seq, msg.target, self.name, self.addr)], out)

    def _on_ack(self, msg: Ack, sender: str, now: float, out: list[Effect]) -> None:
        """An ack closes our probe only with its exact (sequence number, member) pair: from the target, or
        from a helper we asked; a relay's ping only from the member it pinged. Anything else is counted
        (`acks_unmatched`) and changes nothing: a forged ack must not keep a dead member alive."""
        self.stats["acks_received"] += 1
        probe = self._probe
        if probe is not None and probe.seq == msg.seq and (sender == probe.target or sender in probe.helpers):
            if not probe.indirect_sent:
                self.awareness.apply_delta(-1)
            self._probe = None
            if msg.digest and msg.digest != self.table.digest and now >= self._next_digest_sync:
                # Our views of who is alive differ: one of us missed a rumor. Sync now rather than waiting
                # for the next periodic push-pull (this is what leaves no stragglers after a join).
                target = self.table.get(probe.target)
                if target is not None:
                    self._next_digest_sync = now + self.config.membership.probe_interval
                    self.stats["digest_syncs"] += 1
                    out.append(SyncWith(target.addr, join=False))
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and sender == relay.target:
            del self._relays[msg.seq]
            self._relay_answer(relay, Ack(relay.origin_seq, 0), out)
            return
        self.stats["acks_unmatched"] += 1

    def _on_nack(self, msg: Nack, sender: str) -> None:
        """Lifeguard: a helper heard nothing from the target. Counts once per helper we asked (a forged or
        repeated nack would otherwise talk our health score down when the fault is ours)."""
        self.stats["nacks_received"] += 1
        probe = self._probe
        if probe is None or probe.seq != msg.seq or sender not in probe.helpers:
            return
        if probe.nacked is None:
            probe.nacked = set()
        if sender not in probe.nacked:
            probe.nacked.add(sender)
            probe.nacks += 1

    def _relay_answer(self, relay: RelayedPing, msg: Ack | Nack, out: list[Effect]) -> None:
        """An indirect probe's answer to the member that asked: with rumors only at its table address."""
        if relay.origin is None:
            self._send_bare(relay.origin_addr, [msg], out)
        else:
            self._send(relay.origin_addr, relay.origin, [msg], out)

    def _tick_relays(self, now: float, out: list[Effect]) -> None:
        if not self._relays:
            return
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                relay.nack_at = NEVER
                self._relay_answer(relay, Nack(relay.origin_seq), out)
            if now >= relay.expire_at:
                del self._relays[seq]
