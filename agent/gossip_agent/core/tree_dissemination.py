"""State rumors along the epidemic broadcast tree (`gossip.broadcast: tree` in push modes; core/plumtree.py
keeps the tree itself: eager pushes, lazy IHAVEs, GRAFT/PRUNE).

About one copy per member: a new payload is pushed to the eager neighbours (coalesced per neighbour,
core/coalesce.py; within the send budget, core/send_budget.py) and announced to the lazy ones, whose
announcements ride on packets going to them anyway. A critical write also goes straight to more members
(core/critical.py). Members not known to read tree messages get our own writes from the flood queue one gossip
interval later (core/held_floods.py). Control messages count only from the sender's table host.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossip_agent.core import codec
from gossip_agent.core.critical import relay_extras
from gossip_agent.core.digest_riders import digests_allowance, digests_size
from gossip_agent.core.digests import DIGEST_ALLOWANCE
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.hosts import same_host
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import Graft, IHave, Message, Packet, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node_base import NodeBase
from gossip_agent.core.plumtree import (
    ID_BYTES,
    MAX_IDS_PER_MESSAGE,
    SHORT_ID_BYTES,
    SHORT_ID_SHIFT,
    Plumtree,
    message_id,
    short_id,
)
from gossip_agent.core.readers import SHORT_IDS
from gossip_agent.core.send_budget import DEFERRED_KEY

_IHAVE_FRAME = 5  # an IHAVE's bytes besides its ids: array, type, bin header (up to bin16)
# Link requests remembered from members we do not know yet (their Alive is on its way), oldest forgotten first.
_MAX_EARLY_LINKS = 64


def _delivery_path(tree: Plumtree, ident: int, source: str | None, critical: bool) -> str:
    """The stats key of how a payload new to us came (bench_load reports them): over an eager link, as the
    answer to our graft (a repaired eager path: the latency tail), as a critical write's direct copy, or
    otherwise (a pull answer, the writer's flood to members not known to read the tree, a lost link request).
    A graft's answer is a copy from a member we grafted: the eager push that comes late, after we grafted
    another announcer, is the tree's (counted as a graft, it overstated repairs)."""
    if source is not None and tree.grafted(ident, source):  # (before eager: grafting made it an eager neighbour)
        return "tree_delivered_graft"
    if source is not None and source in tree.eager:
        return "tree_delivered_eager"
    return "tree_delivered_critical_direct" if critical else "tree_delivered_other"


class TreeDissemination(NodeBase):
    """The Node's side of the broadcast tree: receiving and spreading payloads, control messages, the flood fallback."""

    def _tree_receive(self, rumor: StateRumor, now: float, source: str | None, out: list[Effect], *,
                      from_host: bool = True) -> bool:
        """A state payload from `source`: a duplicate prunes a link; a new one goes to the state layer and, if
        taken, on along the tree. Never queued here (False): see `_flood_to_others`. A packet not from the
        source's table host changes no link: a duplicate from it is dropped and counted (a forged duplicate
        "from" an eager neighbour pruned that link: PRUNE_AFTER forgeries cut a tree link), a new payload is
        delivered but does not make its claimed sender a neighbour."""
        ident = message_id(rumor.payload)
        if not from_host and self.tree.seen(ident):
            self.stats["tree_duplicates_unverified"] += 1
            return False
        # (A new payload from elsewhere is taken as ours would be: no link of the claimed sender's is touched,
        # neither made lazy nor counted as proven.)
        sender = source if from_host else None
        # (How it came matters only for a new payload: a duplicate, under load half as many as the new ones,
        # skips the lookups.)
        path = "" if self.tree.seen(ident) else _delivery_path(self.tree, ident, sender, rumor.critical)
        if not self.tree.receive(ident, sender, now, can_prune=from_host and source in self._digest_readers,
                                 critical=rumor.critical):
            self.stats["tree_duplicates"] += 1
            return False
        self.stats[path] += 1
        if self.delegate is not None and self.delegate.on_state_rumor(rumor.payload, now):
            rumor = self._relay_class(rumor, sender, now)
            # A critical write goes to `fanout` more members at every hop in clusters its writer could not reach
            # whole (core/critical.py), counting and choosing live members (suspects too) as the writer does.
            k = relay_extras(self.table.n_live - 1, self.config.gossip.fanout) if rumor.critical else 0
            extra = [m.name for m in self._random_peers(k, exclude=source, live_only=True)
                     if m.name not in self.tree.eager] if k else []
            self._tree_spread(ident, rumor, source, now, out, extra=extra)
        return False

    def _tree_spread(self, ident: int, rumor: StateRumor, source: str | None, now: float, out: list[Effect], *,
                     extra: Sequence[str] = ()) -> bool:
        """Push a new payload to the eager neighbours (and `extra` members), announce it to the lazy ones."""
        size = self._header + codec.message_size(rumor)
        # A push too large to share a packet with another as large gains nothing by waiting (core/coalesce.py):
        # held, it only waited for the next push to flush it (at 100 writes/s of 1 KiB, each batch held one
        # push: ~10 ms per hop, a timer wake-up per push, and no header saved).
        alone = 2 * (size - self._header) > self._coalesce.max_bytes
        for name in (*self.tree.deliver(ident, rumor.payload, source, now, critical=rumor.critical), *extra):
            if not rumor.critical and self.send_budget.allow_normal(size) < size:
                # Over the send budget: this neighbour learns the id from its other links' announcements and
                # grafts it later (a critical payload may still spend the reserve: _tree_within_budget).
                self._tree_deferred("normal")
                continue
            self.stats["tree_pushes"] += 1
            if rumor.critical or alone:  # at once, with whatever waits for this neighbour
                self._coalesce.sent(name, now)
                waiting = self._coalesce.take(name)
                if waiting or rumor.critical:
                    self._tree_send_packed(name, [rumor, *waiting], out)
                else:  # (one normal push, its size and budget known: what _tree_send_packed would work out)
                    self._tree_send(name, (rumor,), out, used=size - self._header, pushes=1)
                continue
            ready = self._coalesce.add(name, rumor, size - self._header, now)
            if ready and ready[0] is not rumor:  # a full batch: it goes now, this push starts the next one
                self._tree_send_batch(name, ready, out)
            elif ready:
                self._tree_send_packed(name, ready, out)
        return True

    def _flood_held(self, now: float, out: list[Effect]) -> None:
        """Our writes whose hold is over go to the flood fallback (core/held_floods.py), forwarded at once if
        any was queued."""
        fresh = False
        for rumor, key in self._held_floods.due(now):
            fresh = self._flood_to_others(rumor, key) or fresh
        if fresh and not self.leaving:
            self._fresh_rumor(now, None, out)

    def _flood_to_others(self, rumor: StateRumor, key: str | None) -> bool:
        """Our own write, also queued (the flood's way) for live members that neither read tree messages nor
        are eager neighbours: an older agent learns it from us, from older agents' own floods, or by
        anti-entropy; a newer one not yet known to read tree messages gets it twice at worst. Only the writer
        does this, so a member's readers still being discovered (after a start) costs at most the queue's
        retransmit limit per write, not that much at every member. True if it was queued. Only first-hand
        evidence leaves a member out (its own digest or tree message from its own host: the readers of
        core/readers.py): a digest row ABOUT a member, relayed by anyone, is no proof, since one forged row
        would leave an older agent to anti-entropy for every write of ours. Called one gossip interval after
        the write (core/held_floods.py)."""
        readers, eager = self._digest_readers, self.tree.eager
        covered = {m.name for m in self.table if m.name != self.name and self.table.is_live(m.name)
                   and (m.name in readers or m.name in eager)}
        if len(covered) >= self.table.n_live - 1:
            return False
        self.stats["tree_flood_fallback"] += 1
        self.queue.enqueue(rumor, codec.message_size(rumor), key=key, covered=covered, critical=rumor.critical,
                           sid=short_id(message_id(rumor.payload)))
        return True

    def _tree_send(self, name: str, msgs: Sequence[Message], out: list[Effect], *, used: int | None = None,
                   pushes: int | None = None) -> None:
        """Tree traffic to a live member: with piggybacked rumors to a member known to read tree messages;
        control messages to any other in a packet of their own (an older agent drops that packet alone).
        `used` and `pushes` (bytes of `msgs`, how many are payloads), when the caller knows them: every pushed
        payload passes here, so they are not worked out again per packet."""
        member = self.table.get(name)
        if member is None or not self.table.is_live(name):
            self.tree.remove(name)
            return
        if pushes is None:
            pushes = sum(isinstance(m, StateRumor) for m in msgs)
        if used is None:
            used = sum(codec.message_size(m) for m in msgs)
        reader = name in self._digest_readers
        if not reader:
            # A critical rumor is type 13, which an older agent cannot read: a plain one to it (same size: the
            # flag is the type number).
            msgs = [StateRumor(m.payload) if isinstance(m, StateRumor) and m.critical else m for m in msgs]
            if pushes < len(msgs):
                self._charge(used)
                out.append(Send(member.addr, Packet(self.name, tuple(msgs))))
                return
        # Queued rumors ride along. Fresh digests ride on control packets only (announcements go to every lazy
        # neighbour each lazy interval, plenty of carriers; the digests' round-robin rides on probes and acks):
        # on every payload push they cost as much as the ids of the whole tree.
        digests = self._digests_for(name) if reader and not pushes else []
        self._charge(used + digests_size(digests))
        rumors = self._take(self._budget(used + digests_allowance(digests)), name) if len(self.queue) else []
        out.append(Send(member.addr, Packet(self.name, (*msgs, *rumors, *digests))))

    def _on_tree_message(self, msg: IHave | Graft | Prune | ShortIds, sender: str, now: float, out: list[Effect],
                         grafted: set[int] | None = None, *, shows: bool = True, src_host: str | None = None,
                         fetched: bool = False) -> None:
        """IHAVE / GRAFT / PRUNE from a live member (others are dropped and counted). Whoever sends them reads
        them: from now on our new message types ride on our packets to it (if `shows`: see handle_packet).
        `fetched`: a GRAFT asking for payloads came earlier in the packet, so a PRUNE ends a fetch and cut no
        tree link."""
        if (self._tree_on and src_host is not None and isinstance(msg, Graft) and not msg.ids
                and sender != self.name and (not shows or not self.table.is_live(sender))):
            # A link request from a newcomer whose Alive has not reached us yet (or a member restarted at
            # a new address, or back from death): dropped, it left a link that only its end knew (it
            # pushed to us, nobody pushed or announced to it: in an 8-member cluster it missed every write
            # until anti-entropy). Remembered, bounded, with the host it came from; the link is made when
            # the member's next Alive names that host (_on_alive).
            early = self._early_links
            early.pop(sender, None)
            early[sender] = src_host
            if len(early) > _MAX_EARLY_LINKS:
                del early[next(iter(early))]
        if not self.table.is_live(sender) or sender == self.name:
            self.stats["tree_unknown_member"] += 1
            return
        if not shows:
            # Not from the member's host: a spoofed GRAFT would make us push cached payloads (MAX_GRAFT_ANSWER a
            # packet, ~100x its size) at that member, a spoofed IHAVE fill the tree's missing ids with junk, a
            # spoofed PRUNE cut a link. Dropped and counted; the tree repairs itself by its own traffic.
            self.stats["tree_unverified"] += 1
            return
        self._digest_readers.add(sender)
        if not self._tree_on:
            return  # flood path (or pull): everything reaches us by the queue; the sender's tree repairs
        short = isinstance(msg, ShortIds)
        if isinstance(msg, IHave) or (isinstance(msg, ShortIds) and msg.kind == ShortKind.IHAVE):
            evicted = self.tree.on_ihave(msg.ids, sender, now, short=short)
            if evicted:
                self.stats["tree_missing_evicted"] += evicted
        elif isinstance(msg, Graft | ShortIds):
            # Each payload answers one member's graft once (core/plumtree.py `on_graft`: repeats counted).
            answer = self.tree.on_graft(msg.ids, sender, grafted, short=short)
            self.stats["tree_graft_repeats"] += answer.repeats
            rumors = [StateRumor(p, critical) for p, critical in answer.payloads]
            self.stats["tree_graft_answers"] += len(rumors)
            self._tree_send_packed(sender, rumors, out)
        else:
            self.tree.on_prune(sender, cut=not fetched)

    def _take_early_link(self, member: Member) -> None:
        """Make the link a member asked for before its Alive reached us, if the request came from the host
        that Alive names (_on_tree_message: a newcomer, or a restart at a new address or back from death)."""
        early_host = self._early_links.pop(member.name, None) if self._early_links else None
        if early_host is not None and same_host(early_host, member.addr[0]):
            self.tree.on_graft((), member.name)
            self.stats["tree_early_links"] += 1

    def _tree_riders(self, to_name: str | None, room: int) -> list[Message]:
        """Announcements queued for `to_name` that ride on a packet going to it anyway (a probe, an ack, a
        gossip packet): each saves a packet of its own at the next lazy flush (the header, ~40 B at the IP
        level, costs more than the ids). Only to a member known to read tree messages, in at most half the
        room left (the piggybacked rumors keep the rest)."""
        if not self._tree_on or to_name is None or to_name not in self._digest_readers:
            return []
        short = self.readers.reads(to_name, SHORT_IDS)
        ids = self.tree.take_for(to_name, min(MAX_IDS_PER_MESSAGE, (room // 2 - _IHAVE_FRAME)
                                              // (SHORT_ID_BYTES if short else ID_BYTES)))
        if not ids:
            return []
        self.stats["tree_ihave_ids"] += len(ids)
        self.stats["tree_ihave_riders"] += 1
        return [self._ihave(to_name, ids)]

    def _ihave(self, to_name: str, ids: Sequence[int]) -> IHave | ShortIds:
        """An announcement of `ids` to `to_name`: with short ids (type 19, half the bytes) to a member known to
        read them, else the long kind (type 10)."""
        if self.readers.reads(to_name, SHORT_IDS):
            # (short_id inlined: a call per id was most of an announcement's cost, ~40 ids a lazy interval per peer)
            return ShortIds(ShortKind.IHAVE, tuple([i >> SHORT_ID_SHIFT for i in ids]))
        return IHave(tuple(ids))

    def _tick_tree(self, now: float, out: list[Effect], *, flush: bool = False) -> None:
        """Fill the tree's neighbour sets from live members, then send what its timers made due: link
        requests and grafts, the batched announcements, prunes."""
        wanted = self.tree.wanted()
        if wanted and not self.leaving and now >= self._tree_fill_at:
            self._tree_fill_at = now + self.config.gossip.interval
            eager = self.tree.eager
            cands = self._random_peers(wanted + len(eager), exclude=None, live_only=True, alive_only=True)
            # Near picks first: a far one becomes a lazy link unless we have no eager link yet (core/plumtree.py).
            for cand in sorted(cands, key=lambda m: self.tree.far(m.name)):
                if wanted and self.tree.add_neighbour(cand.name):
                    wanted -= 1
        for peer, batch in self._coalesce.due(now).items():
            self._tree_send_batch(peer, batch, out)
        if now < self.tree.next_deadline() and not flush:
            return
        due = self.tree.tick(now, flush=flush)
        if due.prunes_spared:
            self.stats["tree_prunes_spared"] += due.prunes_spared
        if due.grafts_held:
            self.stats["tree_grafts_held"] += due.grafts_held
        for peer in due.peers():
            msgs: list[Message] = []
            ihaves = due.ihaves.get(peer, [])
            msgs.extend(self._ihave(peer, ihaves[i:i + MAX_IDS_PER_MESSAGE])
                        for i in range(0, len(ihaves), MAX_IDS_PER_MESSAGE))
            announced = len(msgs)  # (the GRAFTs follow)
            grafts = due.grafts.get(peer)
            if grafts is not None:
                msgs.extend(Graft(tuple(grafts[i:i + MAX_IDS_PER_MESSAGE]))
                            for i in range(0, max(1, len(grafts)), MAX_IDS_PER_MESSAGE))
                self.stats["tree_grafts"] += len(grafts)
            short_grafts = due.short_grafts.get(peer)
            if short_grafts:
                msgs.extend(ShortIds(ShortKind.GRAFT, tuple(short_grafts[i:i + MAX_IDS_PER_MESSAGE]))
                            for i in range(0, len(short_grafts), MAX_IDS_PER_MESSAGE))
                self.stats["tree_grafts"] += len(short_grafts)
            fetch = 0  # how many messages at the end are a fetch: its GRAFTs and their PRUNE
            if peer in due.prunes or peer in due.fetches:
                msgs.append(Prune())
                if peer in due.prunes:
                    self.stats["tree_grafts_undone" if peer in due.undone else "tree_prunes"] += 1
                if peer in due.fetches:  # grafts that fetch only: the link stays lazy (core/plumtree.py)
                    # With a prune due too, its PRUNE is the fetch's: in the GRAFT's packet all the same (split, a
                    # lost second packet left the link eager at the peer's end only: _tree_send_packed).
                    fetch = len(msgs) - announced
                    self.stats["tree_grafts_fetch"] += len(grafts or ()) + len(short_grafts or ())  # (ids)
            self.stats["tree_ihave_ids"] += len(ihaves)
            self._tree_send_packed(peer, msgs, out, fetch=fetch)

    def _tree_send_batch(self, name: str, batch: Sequence[StateRumor], out: list[Effect]) -> None:
        """Pushes the coalescer held for `name` (core/coalesce.py), sent and counted together."""
        self.stats["tree_coalesced_packets"] += 1
        self.stats["tree_coalesced_pushes"] += len(batch)
        self._tree_send_packed(name, batch, out)

    def _tree_within_budget(self, msgs: Sequence[Message]) -> Sequence[Message]:
        """The tree's payloads that gossip.maxBytesPerSecond lets out now. Control messages always go
        (like probes); critical payloads while the bucket holds their bytes, normal ones only above the
        reserve they leave to critical ones (send_budget.CRITICAL_RESERVE). Every payload the tree sends
        passes here (pushes, coalesced batches, answers to grafts), so a graft cannot carry past the budget
        what a deferred push held back; a payload left out is counted deferred, and the neighbour grafts it
        from its next announcer, or anti-entropy repairs it."""
        budget = self.send_budget
        spent = 0
        kept: list[Message] = []
        for msg in msgs:
            if isinstance(msg, StateRumor):
                size = self._header + codec.message_size(msg)
                room = budget.allow(2**31) if msg.critical else budget.allow_normal(2**31)
                if spent + size > room:
                    self._tree_deferred("critical" if msg.critical else "normal")
                    continue
                spent += size
            kept.append(msg)
        return kept

    def _tree_deferred(self, cls: str) -> None:
        """A tree payload of class `cls` held back by the send budget (counted with the queue's deferrals)."""
        self.stats["tree_pushes_deferred"] += 1
        self.stats[DEFERRED_KEY + cls] += 1

    def _tree_send_packed(self, name: str, msgs: Sequence[Message], out: list[Effect], *, fetch: int = 0) -> None:
        """`msgs` to `name` in as few packets as the MTU allows (room left for digests, which ride only on
        packets without pushes). Each message is sized and classified here (once; a fetch's twice), for
        `_tree_send` too.

        `fetch`: the last `fetch` messages are a fetch (its GRAFTs and the PRUNE that follows them: core/
        plumtree.py EAGER_STALL_LAZY), kept in one packet when they fit one: split after the GRAFT, a lost
        second packet left the announcer's link eager at its end only (it pushed every payload to us, each a
        duplicate, until our prune of that off-tree link). A fetch larger than a packet's room (GRAFTs of ~100
        ids) is split where it must: what is left of it goes together from where it fits, the PRUNE with the
        last GRAFT unless that GRAFT fills a packet alone."""
        if not self.send_budget.unlimited:
            msgs = self._tree_within_budget(msgs)  # (keeps every control message: `fetch` still counts them)
        pushes = sum(isinstance(m, StateRumor) for m in msgs)
        budget = self._budget(0 if pushes == len(msgs) else DIGEST_ALLOWANCE)
        batch: list[Message] = []
        used = batch_pushes = 0
        fetch_at = len(msgs) - fetch
        rest = sum(codec.message_size(m) for m in msgs[fetch_at:]) if fetch else 0  # the fetch's bytes from here
        for k, msg in enumerate(msgs):
            size = codec.message_size(msg)
            need = size
            if fetch and k >= fetch_at:
                if rest <= budget:
                    need = rest
                rest -= size
            if batch and used + need > budget:
                self._tree_send(name, batch, out, used=used, pushes=batch_pushes)
                batch, used, batch_pushes = [], 0, 0
            batch.append(msg)
            used += size
            if isinstance(msg, StateRumor):
                batch_pushes += 1
        if batch:
            self._tree_send(name, batch, out, used=used, pushes=batch_pushes)
