"""The send path every concern shares: where a packet came from, where it may go, and how it leaves.

Every packet we send passes `_send` (or `_send_bare` / `_send_apart` for what must travel alone): protocol
messages first, then announcements, rumors and digests piggybacked as the MTU and the send budget allow
(gossip.maxBytesPerSecond: probes and acks always go, only the piggyback is trimmed). What is owed to a member
goes only to its table address, so a forged ping cannot make us a reflector.
"""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.digest_riders import digests_allowance, digests_size
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.hosts import same_host
from gossip_agent.core.messages import Ack, Address, Message, Packet, Ping, Rumor, StateRumor
from gossip_agent.core.node_base import NodeBase
from gossip_agent.core.send_budget import budget_deferred, budget_stats


class Sending(NodeBase):
    """The Node's packet assembly, its send-budget charges, and its checks of packet sources."""

    def _budget(self, used: int = 0) -> int:
        return self.config.gossip.mtu - self._header - used

    def _charge(self, size: int) -> None:
        """Bytes of a packet going out, besides its rumors (charged by `_take`): the header and `size`."""
        self.send_budget.charge(self._header + size)

    def _from_table_host(self, name: str, src: Address) -> bool:
        """Whether a packet naming `name` as its sender came from that member's host in our table (the port is
        not compared: an agent may be reached through a mapped port). Only such a packet raises the member's
        reader level (core/readers.py); others are counted, and only delay the level (offers go on)."""
        if self._at_table_host(name, src):
            return True
        if name in self.table and name != self.name:
            self.stats["packets_not_from_member_host"] += 1
        return False

    def _at_table_host(self, name: str, src: Address) -> bool:
        """`_from_table_host` without counting."""
        member = self.table.get(name)
        if member is None or name == self.name:
            return False
        host = member.addr[0]
        return host == src[0] or same_host(host, str(src[0]))  # (the string compare: the hot path, no parsing)

    def _at_table_address(self, name: str | None, addr: Address) -> bool:
        """Whether `addr` is member `name`'s address in our table. What is owed to a member (its queued
        announcements, its next coordinate rows) goes only there: a forged ping names where its ack goes."""
        member = self.table.get(name) if name is not None else None
        return member is not None and member.addr == addr

    def _send_bare(self, to: Address, msgs: list[Message], out: list[Effect]) -> None:
        """`msgs` alone, to an address no member of our table holds: nothing piggybacked (no reflection)."""
        self._charge(sum(codec.message_size(m) for m in msgs))
        out.append(Send(to, Packet(self.name, tuple(msgs))))

    def _send_apart(self, addr: Address, msg: Message, out: list[Effect]) -> None:
        """`msg` in a packet of its own (an offer, a hello, an answer: an older agent that cannot read it drops
        that packet alone), charged to the send budget."""
        self._charge(codec.message_size(msg))
        out.append(Send(addr, Packet(self.name, (msg,))))

    def _send(self, to: Address, to_name: str | None, msgs: list[Message], out: list[Effect]) -> None:
        """Send `msgs` with as many queued rumors piggybacked as the MTU allows (none in pull mode)."""
        used = sum(codec.message_size(m) for m in msgs)
        digests = self._digests_for(to_name, ping=any(isinstance(m, Ping | Ack) for m in msgs))
        # Announcements ride only to the member's own address (a forged ping names where its ack goes).
        riders = self._tree_riders(to_name, self._budget(used + digests_allowance(digests))) \
            if self._at_table_address(to_name, to) else []
        msgs = [*msgs, *riders]
        used += sum(codec.message_size(m) for m in riders)
        # The send budget charges these bytes but never refuses them: only the piggyback is trimmed.
        self._charge(used + digests_size(digests))
        rumors = self._take(self._budget(used + digests_allowance(digests)), to_name) \
            if len(self.queue) and self._pushes and (not msgs or self._piggybacks_to(to_name)) else []
        out.append(Send(to, Packet(self.name, (*msgs, *rumors, *digests))))

    def _take(self, room: int, to_name: str | None, *, limit: int | None = None,
              held: frozenset[int] = frozenset(), spread: bool = False) -> list[Rumor]:
        """Queued rumors for a packet to `to_name`: at most `room` bytes, and only what the send budget allows
        now (critical first, by the queue's order); their bytes are charged. Critical state rumors go as
        plain ones to a member not known to read new message types (an older agent drops the whole packet)."""
        allowed = self.send_budget.allow(room)
        sent = self.queue.sent_bytes
        before = sent["critical"] + sent["normal"]
        rumors = self.queue.take(allowed, self._rumor_population, to=to_name,
                                 to_live=to_name is None or self.table.is_live(to_name), limit=limit, held=held,
                                 shuffle=self.rng.shuffle if spread else None)
        self.send_budget.charge(sent["critical"] + sent["normal"] - before)
        if allowed < room:
            budget_deferred(self.stats, self.queue)
        if rumors and to_name not in self._digest_readers:
            rumors = [StateRumor(r.payload) if isinstance(r, StateRumor) and r.critical else r for r in rumors]
        budget_stats(self.stats, self.queue)
        return rumors
