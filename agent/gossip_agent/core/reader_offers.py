"""Which message types a peer reads, learnt by offers (core/readers.py keeps the levels).

A member of an older release drops a whole packet holding a type it does not know, so newer types ride only to
members that showed they read them. Our highest offer goes at first contact (a hello, paced by
core/hello_queue.py, or beside a probe); a member of this release answers it, and then reads every lower level
too. Lower offers follow only once the highest went unanswered.
"""

from __future__ import annotations

from collections import Counter

from gossip_agent.core.broadcast import retransmit_limit
from gossip_agent.core.effects import Effect
from gossip_agent.core.hello_queue import hellos_pay
from gossip_agent.core.hosts import host_key
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import PeerCoordinates, ShortIds, ShortKind
from gossip_agent.core.node_base import NodeBase
from gossip_agent.core.readers import PEER_COORDINATES, SHORT_IDS


class ReaderOffers(NodeBase):
    """The Node's offers and hellos, and its answers to a peer's short-id offer."""

    def _probe_offers(self, target: Member, now: float, out: list[Effect]) -> bool:
        """The offers (packets of their own, which an older agent drops alone) that go before a probe to a
        member whose level we do not know; True if the lower ones are due (the digest offer after the probe).

        At first contact only our highest offer goes (`_hello_offer`): a member of this release answers it,
        and then reads everything lower too. The lower offers (coordinate, rows, digests) follow only once the
        highest went unanswered for a probe timeout (a hello's, or an earlier probe's): an older agent gets them
        from our next probe of it on. Within a probe timeout of our first offer, none (the answer may be on its
        way)."""
        hello, level = self._hello_offer()
        if self.readers.level(target.name) >= level:
            return False
        first = self.readers.offered_at(target.name)
        if first is not None and now - first < self.config.membership.probe_timeout:
            return False
        lower = first is not None
        if lower and not self.topology.reads_coordinates(target.name):
            # Not known to read coordinates: ours in a packet apart, first, which an older agent drops alone;
            # a newer one then puts its own on its acks. (Pings carry none: the prober's sample needs only the
            # target's, and every ping would pay ~50 bytes.)
            offer = self.topology.coordinate_message()
            self._send_apart(target.addr, offer, out)
            self.stats["coordinate_offers"] += 1
        if (lower or level == PEER_COORDINATES) and not self.topology.reads_rows(target.name):
            # Second-hand coordinates likewise (type 18; the previous release reads 14 but not 18): an empty
            # message in a packet of its own; a newer agent answers with rows on its acks, a reader from then on.
            # (The offer carried two rows: in a young cluster, where most probes are first contacts, offers
            # were a third of all row bytes, and the rows reach the peer on acks anyway.)
            rows = PeerCoordinates(())
            self._send_apart(target.addr, rows, out)
            self.stats["coordinate_row_offers"] += 1
        if level == SHORT_IDS and not self.readers.reads(target.name, SHORT_IDS):
            # Short ids (type 19: pull requests, tree ids) likewise: an offer apart, answered by a newer agent's.
            self._send_apart(target.addr, hello, out)
            self.stats["short_id_offers"] += 1
        self.readers.offered(target.name, now)
        return lower

    def _hello_offer(self) -> tuple[ShortIds | PeerCoordinates, int]:
        """Our highest offer and its level: short ids (type 19) when we use them (`_offers_short_ids`), which a
        member of this release answers with its own (`_on_short_ids`); else (push mode on the flood path) an
        empty message of second-hand coordinates (type 18), which a newer member reads (its level shows) and
        answers on its acks. Either shows every lower level too (core/readers.py)."""
        if self._offers_short_ids():
            return ShortIds(ShortKind.OFFER), SHORT_IDS
        return PeerCoordinates(()), PEER_COORDINATES

    def _tick_hello(self, now: float, out: list[Effect]) -> None:
        """Greet the members due (core/hello_queue.py) with our highest offer, in a packet of its own (an older
        agent drops it alone), charged to the send budget like the offers beside probes. Members that showed
        their level meanwhile, that we already offered to, or that are no longer live, are skipped, and so is
        everyone while the cluster is too large for greetings to pay (`hellos_pay`)."""
        if self.leaving:
            return
        offer, level = self._hello_offer()
        table, readers = self.table, self.readers
        # A large cluster learns levels from probes: there the greetings would cost more than they save.
        pays = hellos_pay(table.n_live, retransmit_limit(self.config.gossip.retransmit_mult, table.n_live))

        def needs_none(name: str) -> bool:
            return (not pays or not table.is_live(name) or name == self.name or readers.level(name) >= level
                    or readers.offered_at(name) is not None)

        shown: Counter[str] | None = None

        def vouched(host: str) -> int:
            """Live members at `host` (a `host_key`: every spelling of one IP, an IPv6 /64) that showed
            themselves first-hand (a reader level): room for more hellos there (core/hello_queue.py ONE HOST).
            One pass over the table, only once a host is at its cap."""
            nonlocal shown
            if shown is None:
                shown = Counter(host_key(m.addr[0]) for m in table
                                if readers.level(m.name) > 0 and table.is_live(m.name))
            return shown[host]

        hellos = self._hellos
        held = hellos.held_back
        for name in hellos.due(now, needs_none, vouched):
            member = table.get(name)
            assert member is not None  # (live: needs_none)
            self._send_apart(member.addr, offer, out)
            readers.offered(name, now)
            self.stats["hellos"] += 1
        if hellos.held_back != held:
            self.stats["hellos_held"] += hellos.held_back - held

    def _greet(self, name: str) -> None:
        """A member entered our table live, or came back after a reset of its reader level: queue it for one
        hello (core/hello_queue.py; a full queue is counted, and leaves it to our probes' offers). Its host key
        is the queue's (a cap per host: gossip may name many fake members at one victim's address; core/hosts.py
        folds the spellings of one host and an IPv6 /64 into one key)."""
        member = self.table.get(name)
        assert member is not None  # (just entered, or came back to, our table)
        hellos = self._hellos
        held = hellos.held_back
        if not hellos.add(name, host_key(member.addr[0])):
            self.stats["hellos_refused"] += 1
        elif hellos.held_back != held:  # parked at once behind its host's names (core/hello_queue.py ONE HOST)
            self.stats["hellos_held"] += 1

    def _on_short_ids(self, msg: ShortIds, sender: str, out: list[Effect], now: float,
                      grafted: set[int] | None = None, *, shows: bool = True) -> bool:
        """A type-19 message from `sender`: it reads short ids from now on (its offer -- a hello or a probe's --
        gets ours back, at most once per answer window, in a packet of its own, so both ends know). Short
        announcements and grafts go to the tree as the long ones do. True if it is a pull request to answer.
        Only from the member's host (`shows`, see handle_packet) does it raise the level or draw our offer, and
        do its tree messages count."""
        member = self.table.get(sender)
        if member is None or sender == self.name:
            self.stats["short_ids_unknown_member"] += 1
            return False
        if shows:
            self.readers.show(sender, SHORT_IDS)
            # Answered at most once per answer window (core/readers.py `answer_due`): our answer is an offer
            # too, and a member whose hello we dropped (it was not in our table yet), or that reset us, knows
            # nothing of us even if we know it.
            if msg.kind == ShortKind.OFFER and self._offers_short_ids() and self.readers.answer_due(sender, now):
                offer = ShortIds(ShortKind.OFFER)
                self._send_apart(member.addr, offer, out)
                self.readers.offered(sender, now)
                self.stats["short_id_answers"] += 1
        if msg.kind in (ShortKind.IHAVE, ShortKind.GRAFT):
            self._on_tree_message(msg, sender, now, out, grafted, shows=shows)
        return msg.kind == ShortKind.PULL

    def _offers_short_ids(self) -> bool:
        """Whether short ids are of use to us: pull requests (pull, push-pull) or the tree's announcements."""
        return self.config.gossip.mode != "push" or self._tree_on
