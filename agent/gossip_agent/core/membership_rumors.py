"""Membership rumors: Alive, Suspect and Dead applied to our table, refuted when about us (memberlist's
state.go alive/suspect/dead half, with suspicion.go's Lifeguard timer in core/suspicion.py).

A rumor changes our view only if it is newer (higher incarnation, or a stronger state at the same one); a
change is queued for re-broadcast (core/flooding.py). A suspicion becomes a death after a timeout that shrinks
as independent members confirm it; an accusation about us is refuted by raising our incarnation. Dead and left
members are reaped after `reap_after`; failed ones are remembered for reconnects after a partition heals.
State rumors pass through `_apply_rumor` too, on to the tree (core/tree_dissemination.py) or the queue.
"""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.effects import Effect, EventKind, MemberEvent, SyncWith
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import Alive, Dead, MemberState, Rumor, StateRumor, Suspect
from gossip_agent.core.node_base import NEVER, NodeBase, meta_size
from gossip_agent.core.suspicion import Suspicion, suspicion_min_timeout
from gossip_agent.core.topology_state import ZONE_META_KEY

# Failed members remembered for reconnects; past this the oldest are forgotten.
_MAX_FORMER = 1024


class MembershipRumors(NodeBase):
    """The Node's membership state machine: what each rumor does to our table, and the timers that end
    suspicions and reap the dead."""

    def _apply_rumor(self, rumor: Rumor, now: float, source: str | None, out: list[Effect], *,
                     from_host: bool = True) -> bool:
        """Apply one rumor; True if it changed our view (it is then queued for re-broadcast). `from_host`: the
        packet came from `source`'s table host (see handle_packet)."""
        if isinstance(rumor, StateRumor):
            if self._tree_on:
                return self._tree_receive(rumor, now, source, out, from_host=from_host)
            sid = self._note_held(rumor.payload, now, source)
            if self.delegate is None or not self.delegate.on_state_rumor(rumor.payload, now):
                return False
            self._enqueue(self._relay_class(rumor, source if from_host else None, now), source, sid=sid)
            return True
        if rumor.name == self.name:
            return self._about_self(rumor, now)
        member = self.table.get(rumor.name)
        if isinstance(rumor, Alive):
            return self._on_alive(rumor, member, now, source, out)
        if member is None or rumor.incarnation < member.incarnation:
            return False
        if isinstance(rumor, Suspect):
            return self._on_suspect(rumor, member, now, source, out)
        return self._on_dead(rumor, member, now, source, out)

    def _about_self(self, rumor: Alive | Suspect | Dead, now: float) -> bool:
        """Someone talks about us. Refute anything that is not our current truth (SWIM's incarnation bump)."""
        if self.leaving:
            return False
        if rumor.incarnation < self.incarnation:
            if not isinstance(rumor, Alive):
                # A stale accusation: whoever still spreads it missed our refutation. Say it again.
                self.stats["stale_accusations"] += 1
                self._announce_self(now)
                self._refuted = True
                return True
            return False
        if isinstance(rumor, Alive) and rumor.incarnation == self.incarnation and rumor.addr == self.addr \
                and dict(rumor.meta) == self.meta:
            return False
        # Saturates at the codec's MAX_INCARNATION (decoders refuse more): an accusation forged at the maximum
        # cannot be refuted, but it can no longer overflow the encoder; the member is reaped after
        # `reap_after` and then re-added by its next Alive at the maximum.
        self.incarnation = min(rumor.incarnation + 1, codec.MAX_INCARNATION)
        if not isinstance(rumor, Alive):
            # Lifeguard: being accused suggests we are slow; probe more gently for a while.
            self.awareness.apply_delta(1)
        self.stats["refutations"] += 1
        self._refuted = True
        self._announce_self(now)
        return True

    def _announce_self(self, now: float) -> None:
        me = self.table.get(self.name)
        assert me is not None
        if me.meta.get(ZONE_META_KEY) != self.meta.get(ZONE_META_KEY):
            self._zone_version += 1
        me.incarnation, me.meta = self.incarnation, dict(self.meta)
        self._enqueue(Alive(self.name, self.incarnation, self.addr, dict(self.meta)), None)

    def _on_alive(self, rumor: Alive, member: Member | None, now: float, source: str | None,
                  out: list[Effect]) -> bool:
        if member is not None and rumor.incarnation <= member.incarnation:
            return False
        if meta_size(rumor.meta) > self.config.gossip.max_meta_bytes:
            self.stats["meta_too_large"] += 1
            return False
        if member is None:
            if len(self.table) >= self.config.membership.max_members:
                # Counted refusal: a forged Alive flood cannot grow the table (memory, probe rounds, push-pull).
                self.stats["member_cap"] += 1
                return False
            self._former.pop(rumor.name, None)
            member = Member(rumor.name, rumor.addr, rumor.incarnation, MemberState.ALIVE, dict(rumor.meta), now)
            self.table.add(member)
            # A newcomer goes to a random place in the remaining probe order (memberlist does the same).
            pos = self._probe_index + int(self.rng.random() * (len(self._probe_order) - self._probe_index + 1))
            self._probe_order.insert(pos, member.name)
            out.append(MemberEvent(EventKind.JOIN, member.snapshot()))
            self._take_early_link(member)
            self._greet(member.name)
            self._enqueue(rumor, source, low=True)  # announcements of newcomers never crowd out real news
            return True
        previous = member.state
        self._former.pop(member.name, None)
        moved = member.addr != rumor.addr
        changed = moved or member.meta != rumor.meta
        if member.meta.get(ZONE_META_KEY) != rumor.meta.get(ZONE_META_KEY):
            self._zone_version += 1
        member.incarnation, member.addr, member.meta = rumor.incarnation, rumor.addr, dict(rumor.meta)
        self.table.set_state(member, MemberState.ALIVE, now)
        if self._suspicions.pop(member.name, None) is not None:
            self._suspicions_changed()
        if previous == MemberState.ALIVE:
            if changed:
                out.append(MemberEvent(EventKind.UPDATE, member.snapshot()))
        else:
            out.append(MemberEvent(EventKind.ALIVE, member.snapshot()))
        # A newer incarnation may be a restart between our probes, never suspected: it lost the coordinate we
        # last sent it, and we hold back ours on acks to it while ours only wobbles (`own_on_ack`, up to
        # OWN_REFRESH). One coordinate on our next ack to it; incarnations no longer move at every write.
        self.topology.resend_own(member.name)
        # And it may be a restart on an earlier release (a rollback at the same address): the compact forms of
        # this release (pings, coordinates) go to it again only once it shows them (one offer at our next ack).
        self.topology.recheck_compact(member.name)
        if previous != MemberState.ALIVE or moved:
            # Back from suspicion or death, or moved: perhaps a restart on another release. It gets digests
            # again only once it sends one (until then, in packets of their own).
            self._digest_readers.discard(member.name)
            self._digest_exchange.forget(member.name, reaped=False)
            self.topology.offer_again(member.name)
            self.tree.remove(member.name)  # a restart lost its tree links: it picks new ones
            self._take_early_link(member)  # (and may have asked for one before this Alive reached us)
            self._greet(member.name)
        self._enqueue(rumor, source)
        return True

    def _on_suspect(self, rumor: Suspect, member: Member, now: float, source: str | None,
                    out: list[Effect]) -> bool:
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        if member.state == MemberState.SUSPECT:
            suspicion = self._suspicions.get(member.name)
            if suspicion is not None and suspicion.confirm(rumor.sender):
                self._suspicions_changed()  # (its timeout shrank)
                # Re-broadcast confirmations, so every member's timer shrinks too.
                self._enqueue(rumor, source)
                return True
            return False
        member.incarnation = rumor.incarnation
        self.table.set_state(member, MemberState.SUSPECT, now)
        cfg = self.config.membership
        n = self.table.n_live
        expected = cfg.suspicion_mult - 2 if n - 2 >= cfg.suspicion_mult - 2 else 0
        min_timeout = suspicion_min_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        self._suspicions[member.name] = Suspicion(
            incarnation=rumor.incarnation, accuser=rumor.sender, started=now, min_timeout=min_timeout,
            max_timeout=cfg.suspicion_max_timeout_mult * min_timeout, expected=max(0, expected))
        self._suspicions_changed()
        self.stats["suspicions"] += 1
        out.append(MemberEvent(EventKind.SUSPECT, member.snapshot()))
        self._enqueue(rumor, source)
        return True

    def _on_dead(self, rumor: Dead, member: Member, now: float, source: str | None, out: list[Effect]) -> bool:
        left = rumor.sender == rumor.name
        if member.state == MemberState.DEAD and left:
            return self._dead_to_left(rumor, member, now, source, out)
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        member.incarnation = rumor.incarnation
        self.table.set_state(member, MemberState.LEFT if left else MemberState.DEAD, now)
        if self._suspicions.pop(member.name, None) is not None:
            self._suspicions_changed()
        self._graveyard.append((now, member.name))
        self.topology.drop_coordinate(member.name)  # no RTT estimates to a member we hold dead or left
        self.tree.remove(member.name)
        self._coalesce.drop(member.name)
        if not left:
            self._former[member.name] = (member.addr, now)
            if len(self._former) > _MAX_FORMER:
                del self._former[next(iter(self._former))]
        self.stats["left" if left else "deaths"] += 1
        out.append(MemberEvent(EventKind.LEFT if left else EventKind.DEAD, member.snapshot()))
        self._enqueue(rumor, source)
        return True

    def _dead_to_left(self, rumor: Dead, member: Member, now: float, source: str | None,
                      out: list[Effect]) -> bool:
        """A member we hold dead says it left (its own Dead, at an incarnation no older than the one it died
        at): it did, so it is LEFT, and the word spreads. On a loaded machine a member was declared dead
        before its refutation went round and then left; it stayed dead for good where the death came first
        (3 members of 5, `test_graceful_leave_shows_left_not_dead` on real agents), and the operator and
        `gossipctl members` told a scale-down from a crash by it. Serf moves a failed member to left on its
        leave intent the same way."""
        member.incarnation = rumor.incarnation
        self.table.set_state(member, MemberState.LEFT, now)
        self._graveyard.append((now, member.name))  # (reaped from its new state_since, as any departure)
        self._former.pop(member.name, None)  # it left: no reconnect attempts to it
        self.stats["left_after_dead"] += 1
        out.append(MemberEvent(EventKind.LEFT, member.snapshot()))
        self._enqueue(rumor, source)
        return True

    def _tick_suspicions(self, now: float, out: list[Effect]) -> None:
        if not self._suspicions or now < self._suspicions_due:
            return
        for name, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                del self._suspicions[name]
                member = self.table.get(name)
                if member is not None and member.state == MemberState.SUSPECT:
                    self._apply_rumor(Dead(name, suspicion.incarnation, self.name), now, None, out)
        self._suspicions_changed()

    def _suspicions_changed(self) -> None:
        """A suspicion started, was confirmed or ended: keep the soonest deadline (`_suspicions_due`).
        `next_deadline` runs after every packet, and a deadline is Lifeguard's formula (two logarithms) over
        each suspicion, which changes only here: with a few hundred members suspected at once (a zone lost),
        recomputing them all per call cost more than the packet."""
        due = NEVER
        for suspicion in self._suspicions.values():
            at = suspicion.deadline()
            if at < due:
                due = at
        self._suspicions_due = due

    def _tick_reap(self, now: float, out: list[Effect]) -> None:
        reap_after = self.config.membership.reap_after
        while self._graveyard and self._graveyard[0][0] + reap_after <= now:
            since, name = self._graveyard.popleft()
            member = self.table.get(name)
            gone = member is not None and member.state in (MemberState.DEAD, MemberState.LEFT)
            if member is None or not gone or member.state_since != since:
                continue
            self.table.remove(name)
            self.root_digests.forget(name)
            self._recent_ids.forget(name)
            self._held_claims.forget(name)
            self._digest_exchange.forget(name)
            self._digest_readers.discard(name)
            self._hellos.discard(name)
            self.topology.forget(name)
            self.tree.remove(name)
            self._forget_probe_slot(name)
            out.append(MemberEvent(EventKind.REAP, member.snapshot()))

    def _forget_probe_slot(self, name: str) -> None:
        """A reaped member leaves the probe order now: if it rejoins, it gets one new slot, not a second."""
        try:
            i = self._probe_order.index(name)
        except ValueError:
            return
        del self._probe_order[i]
        if i < self._probe_index:
            self._probe_index -= 1

    def _reconnect(self, now: float, out: list[Effect]) -> None:
        """Try one failed member again: after a partition heals, this is how the two sides find each other."""
        cfg = self.config.membership
        self._next_reconnect = now + cfg.reconnect_interval
        for name, (_, died) in list(self._former.items()):
            if died + cfg.reconnect_timeout <= now:
                del self._former[name]
        if self._former and not self.leaving:
            names = list(self._former)
            addr, _ = self._former[names[int(self.rng.random() * len(names))]]
            out.append(SyncWith(addr, join=False))
