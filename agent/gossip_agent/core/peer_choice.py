"""Whom we talk to: random peers (uniform, or near/far under topology-aware choice, core/topology_state.py),
how near a member is, and the network coordinates that tell.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossip_agent.core import codec
from gossip_agent.core.effects import Effect
from gossip_agent.core.hosts import same_host
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import Address, MemberState, NetCoordinate, PeerCoordinates
from gossip_agent.core.node_base import NodeBase
from gossip_agent.core.rng import Rng


class PeerChoice(NodeBase):
    """The Node's choice of peers and its coordinate exchange."""

    def observe_rtt(self, name: str, rtt: float, now: float) -> float | None:
        """A probe round trip to `name` measured by the driver (io/probe_rtt.py), in seconds: a Vivaldi sample
        against the coordinate `name` sent with its ack. Returns the relative error of the estimate made just
        before it (for metrics), or None if unused."""
        if name == self.name or name not in self.table:
            return None
        return self.topology.observe_rtt(name, rtt, now, self.rng, self.is_near(name))

    def choose_partner(self, names: Sequence[str], rng: Rng) -> str | None:
        """One of `names` for anti-entropy (core/state_node.py): near/far as gossip peers are
        (core/topology_state.py), a plain uniform draw from `rng` while no topology is known."""
        return self.topology.choose_one(names, rng, lambda n: m.meta if (m := self.table.get(n)) else None)

    def is_near(self, name: str) -> bool | None:
        """Whether member `name` is near us (same zone, or a low estimated RTT: core/topology_state.py); None
        while no topology is known (every peer alike)."""
        if not self.topology.active():
            return None
        return self.topology.is_near(name, m.meta if (m := self.table.get(name)) else {})

    def _is_far(self, name: str) -> bool:
        """Far under topology-aware choice (not near); False while no topology is known (core/plumtree.py)."""
        return self.is_near(name) is False

    def _piggybacks_to(self, name: str | None) -> bool:
        """Whether a probe, ack or ping-req to `name` carries rumors: always, except to a far member under
        topology-aware choice, then with probability crossZoneFraction (probe targets stay round-robin, so
        without this two thirds of the piggybacked bytes would still cross zones; core/topology_state.py)."""
        if name is None or not self.topology.active():
            return True
        member = self.table.get(name)
        return member is None or self.topology.piggybacks_to(name, member.meta, self.rng)

    def _coordinate_for(self, name: str, now: float, addr: Address,
                        out: list[Effect]) -> tuple[NetCoordinate | PeerCoordinates, ...]:
        """Our coordinate for an ack to `name` at `addr` (its table address), if it reads coordinates, and a
        few second-hand ones if it reads those, piggybacked as rumors are (core/topology_state.py); in the
        compact form if it reads that. A reader of the older form gets ours in the compact form once, in a
        packet of its own (`compact_offer_due`)."""
        topology = self.topology
        if not topology.reads_coordinates(name):
            return ()
        compact = topology.reads_compact(name)
        if not compact and topology.compact_offer_due(name):
            self._send_apart(addr, topology.coordinate_message(compact=True), out)
            self.stats["compact_coordinate_offers"] += 1
        passed = topology.rows_on_ack(name, now, self._piggybacks_to(name)) if topology.reads_rows(name) else None
        own = (topology.coordinate_message(compact),) if topology.own_on_ack(name, now) else ()
        return own if passed is None else (*own, passed)

    def _send_coordinate_table(self, to_name: str, now: float, out: list[Effect], source_host: str | None) -> None:
        """A joiner's first coordinates: every one we hold (core/topology_state.py), in packets of their own
        (an older agent drops just those), only to the host its join came from (as the digest table)."""
        member = self.table.get(to_name)
        if member is None or to_name == self.name or (
                source_host is not None and not same_host(member.addr[0], source_host)):
            return
        for msg in self.topology.table_for(to_name, now, self.name, codec.MAX_PEER_COORDINATE_ROWS):
            self._send_apart(member.addr, msg, out)
            self.stats["coordinate_tables_sent"] += 1

    def _random_peers(self, k: int, *, exclude: str | None, live_only: bool,
                      alive_only: bool = False) -> list[Member]:
        """Up to k distinct random members other than us (rejection sampling: O(k), not O(N)).

        Without `live_only`, recently dead members are included too (memberlist's gossip to the dead), so a
        member wrongly declared dead hears about it and refutes.
        """
        order = self._probe_order
        if not order or k <= 0:
            return []
        states: tuple[MemberState, ...] = tuple(MemberState)
        if alive_only:
            states = (MemberState.ALIVE,)
        elif live_only:
            states = (MemberState.ALIVE, MemberState.SUSPECT)
        if self.topology.active():  # near/far choice (core/topology_state.py); else uniform, as below
            return self.topology.choose(order, k, self.rng, lambda name: self._eligible(name, exclude, states),
                                        lambda m: m.meta)
        chosen: dict[str, Member] = {}

        def consider(name: str) -> None:
            if name != exclude and name not in chosen:
                m = self.table.get(name)
                if m is not None and m.state in states:
                    chosen[name] = m

        for _ in range(k * 4 + 4):
            if len(chosen) >= k:
                break
            consider(order[int(self.rng.random() * len(order))])
        if len(chosen) < k and (len(order) <= 4 * k or k >= self._eligible_count(alive_only, live_only, order)):
            # Small clusters, or every eligible member wanted (a critical write goes to all, and a table can
            # still hold many dead members awaiting reaping): sampling misses some; a full scan is cheap here.
            for name in order:
                if len(chosen) >= k:
                    break
                consider(name)
        return list(chosen.values())

    def _eligible_count(self, alive_only: bool, live_only: bool, order: Sequence[str]) -> int:
        """How many members besides us `_random_peers` may choose from (an upper bound: `exclude` aside)."""
        if alive_only:
            return self.table.n_alive - 1
        if live_only:
            return self.table.n_live - 1
        return len(order)

    def _eligible(self, name: str, exclude: str | None, states: tuple[MemberState, ...]) -> Member | None:
        m = self.table.get(name) if name != exclude else None
        return m if m is not None and m.state in states else None
