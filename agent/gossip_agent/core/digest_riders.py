"""Convergence digests on the wire (core/digests.py keeps the table and the reconciliation).

Digests ride in a fixed allowance of the packets we send anyway, only to members that read them (an older
agent drops a whole packet holding a type it does not know); rows we owe a member that no reply carried go in a
packet of their own, and a joiner gets the whole table. Rows are taken only about members we know, and who
holds a version only from the member's own host.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossip_agent.core import codec
from gossip_agent.core.digests import DIGEST_ALLOWANCE, MAX_DIGEST_MESSAGES, REPAIR_ALLOWANCE, Merge
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.hosts import same_host
from gossip_agent.core.messages import Digest, DigestSummary, Packet
from gossip_agent.core.node_base import NodeBase


def digests_allowance(digests: list[Digest | DigestSummary]) -> int:
    """Bytes to keep free for these digests: the fixed allowance when a packet carries any."""
    return DIGEST_ALLOWANCE if digests else 0


def digests_size(digests: Sequence[Digest | DigestSummary]) -> int:
    """What these digests cost on the wire (the send budget charges this, not the allowance)."""
    return sum(codec.message_size(d) for d in digests)


class DigestRiders(NodeBase):
    """The Node's convergence digests: publishing ours, riding them on packets, taking peers'."""

    def publish_root_digest(self, root_hex: str, keys: int, hlc_ms: int, *, seq_floor: int = 0,
                            now: float | None = None) -> bool:
        """Our replica's convergence digest: it rides in the digest allowance of the packets we send anyway
        (no incarnation bump, no rumor, no event). False if it equals the one we publish. `seq_floor` is the
        wall clock in ms; with `now`, it also bounds the sequence numbers we take from peers."""
        if self.root_digests.publish(root_hex, keys, hlc_ms, seq_floor=seq_floor, now=now) is None:
            return False
        self.stats["digests_published"] += 1
        return True

    def _digests_for(self, to_name: str | None, *, ping: bool = False) -> list[Digest | DigestSummary]:
        """Convergence digests for a packet to `to_name`, within DIGEST_ALLOWANCE (core/digests.py: rows we
        owe it, fresh rows, a summary on a probe or when asked); none to a member not known to read them (an
        older agent would drop the whole packet). Except on a probe or ack, to a far member under
        topology-aware choice only with probability crossZoneFraction, as piggybacked rumors
        (core/topology_state.py): under writes digests were the largest share of what still crossed zones."""
        if to_name is None or to_name not in self._digest_readers or not len(self.root_digests):
            return []
        if not ping and not self._piggybacks_to(to_name):
            return []
        return self._count_digests("piggybacked", self._digest_exchange.outgoing(
            to_name, DIGEST_ALLOWANCE, codec.message_size, ping=ping))

    def _count_digests(self, where: str, digests: list[Digest | DigestSummary]) -> list[Digest | DigestSummary]:
        """Count digest rows and summaries sent by path (metrics: what convergence monitoring costs, where)."""
        rows = sum(isinstance(d, Digest) for d in digests)
        if rows:
            self.stats[f"digest_rows_{where}"] += rows
        if len(digests) > rows:
            self.stats[f"digest_summaries_{where}"] += len(digests) - rows
        return digests

    def _on_digests(self, packet: Packet, now: float, shows: bool = True) -> None:
        """A packet's digest rows and summaries. From and about members we know only: a forged name cannot take
        a row (the table is bounded too, and so is the set of readers: members of our table only, forgotten
        when reaped). At most MAX_DIGEST_MESSAGES a packet, and one summary (each costs a pass over the table)."""
        taken, summaries = 0, 0
        summary: DigestSummary | None = None
        heard: set[str] = set()  # rows this packet carried that left us holding the sender's version
        for msg in packet.messages:
            if not isinstance(msg, Digest | DigestSummary):
                continue
            summaries += isinstance(msg, DigestSummary)
            if taken >= MAX_DIGEST_MESSAGES or summaries > 1:  # an honest packet has one summary at most
                self.stats["digests_over_limit"] += 1
                continue
            taken += 1
            if self.table.get(packet.sender) is None or packet.sender == self.name:
                self.stats["digests_unknown_member"] += 1
                continue
            if shows:
                self._digest_readers.add(packet.sender)
            if isinstance(msg, DigestSummary):
                if not shows:
                    # A summary costs a pass over the table (~1.3 ms at 5,000 rows) and can leave us owing the
                    # member every row (memory: members x rows over forged summaries naming each member in
                    # turn): taken only from the member's host.
                    self.stats["digest_summaries_unverified"] += 1
                    continue
                summary = msg
            else:
                if self._on_root_digest(msg, packet.sender, now, shows) in (Merge.NEW, Merge.SAME):
                    heard.add(msg.name)
        if summary is not None:  # after the rows: what they showed the sender holds is not owed again
            self._digest_exchange.heard_summary(packet.sender, summary, heard)

    def _on_root_digest(self, digest: Digest, sender: str, now: float, shows: bool = True) -> Merge | None:
        if self.table.get(digest.name) is None:
            self.stats["digests_unknown_member"] += 1
            return None
        # Who holds a version is believed only from the member's host (a forged sender would steer pushes).
        merged = self.root_digests.merge(digest, now=now, sender=sender if shows else None)
        if merged is Merge.NEW:
            if self.delegate is not None:
                self.delegate.on_root_digest(digest, now)
        elif merged is Merge.OLDER:
            self.root_digests.owe(sender, (digest.name,))  # the sender is behind: ours goes back to it
        elif merged is Merge.REFUSED:
            self.stats["digests_refused"] += 1
        return merged

    def _repair_digests(self, to_name: str, now: float, out: list[Effect]) -> None:
        """Rows (or a summary) we owe `to_name` that no reply carried: a packet of digests alone."""
        member = self.table.get(to_name)
        if (member is None or to_name not in self._digest_readers or not self._digest_exchange.pending(to_name)
                or not self._piggybacks_to(to_name) or not self._digest_exchange.repair_allowed(to_name, now)):
            return
        digests = self._count_digests("repair", self._digest_exchange.outgoing(
            to_name, REPAIR_ALLOWANCE, codec.message_size))
        if digests:
            self._charge(digests_size(digests))
            out.append(Send(member.addr, Packet(self.name, tuple(digests))))
            self.stats["digest_repairs"] += 1

    def _send_digest_table(self, to_name: str, now: float, out: list[Effect], source_host: str | None) -> None:
        """A joiner's first view of the digests: the whole table, in packets of digests alone (an older agent
        drops just those). The joiner then knows every root at once, not after rounds of reconciliation.
        Only to the host the join's stream came from: a join forged for another address would otherwise make
        us a reflector (a small request, up to maxMembers rows sent to a victim); that joiner reconciles."""
        member = self.table.get(to_name)
        if member is None or to_name == self.name:
            return
        if source_host is not None and not same_host(member.addr[0], source_host):
            self.stats["digest_tables_unverified"] += 1
            return
        if not self._digest_exchange.table_allowed(to_name, now):
            return
        for part in self.root_digests.all_rows(REPAIR_ALLOWANCE, codec.message_size):
            self._charge(digests_size(self._count_digests("table", list(part))))
            out.append(Send(member.addr, Packet(self.name, tuple(part))))
            self.stats["digest_tables_sent"] += 1
