"""Virtual links for the simulator: latency, loss, partitions, crashed hosts, and one event heap.

Hosts are small integers (the simulation's node indexes), so the hot path is list indexing, not hashing.
Everything random comes from one seeded `random.Random`, drawn in event order, so a run is reproducible
bit for bit from its seed.

Model, and its caveats:
- A datagram is lost with the link's probability, else it arrives after `latency + jitter * U(0, 1)`.
  Jitter may reorder datagrams, as UDP does. Streams (push-pull, TCP probes) are reliable and not lost,
  but take the same latency and fail on partitions and down hosts.
- A partition is a list of groups; hosts talk only within their group (hosts in no listed group form one
  more group). `block(a, b)` cuts a single pair, both ways. Healing restores full connectivity.
- A down host neither sends nor receives. Datagrams already in flight from it still arrive (they left the
  NIC before the crash); datagrams to it are dropped on arrival.
- Zones (optional, `set_zones`): every host is in a zone, and a datagram or stream between two hosts takes
  the profile of their zone pair (inside a zone, or between two zones) unless `set_link` overrode the pair:
  a cluster spread over three availability zones is three profiles, not N² links.
- Bandwidth (optional, per sending host): datagrams queue behind each other on the sender's uplink, so a
  burst is spread out in time. Needs packet sizes, so the simulation turns byte accounting on with it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# Event kinds in the heap, in no particular order. Ties in time are broken by insertion order.
WAKE = 0          # a node's next_deadline() fell due: (WAKE, node, generation)
DELIVER = 1       # a datagram arrives: (DELIVER, dst, (src, packet))
SYNC_REQUEST = 2  # a push-pull stream reaches the responder: (SYNC_REQUEST, dst, (src, state))
SYNC_REPLY = 3    # the responder's state reaches the initiator: (SYNC_REPLY, src, (dst, state))
SYNC_FAILED = 4   # the stream could not be opened or timed out: (SYNC_FAILED, src, dst_addr)
TCP_PROBE_OK = 5  # a TCP fallback ping was answered: (TCP_PROBE_OK, src, seq)
CALL = 6          # a driver callback: (CALL, -1, fn)


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """One direction of a link. Defaults are a quiet LAN: 1 ms one way, up to 1 ms jitter, no loss."""

    latency: float = 0.001
    jitter: float = 0.001
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss must be within [0, 1]")


class EventQueue:
    """A heap of (time, seq, kind, node, arg). `seq` makes order total and deterministic."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: float, kind: int, node: int, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, node, arg))

    def peek_time(self) -> float:
        return self._heap[0][0] if self._heap else float("inf")

    def pop(self) -> tuple[float, int, int, int, Any]:
        return heapq.heappop(self._heap)

    def pop_due(self, t_end: float) -> Iterator[tuple[float, int, int, int, Any]]:
        """Pop events in order while the earliest is due by `t_end`; events pushed meanwhile count too.
        (The run loop's hot path: a generator over the heap costs less than a method call per event.)"""
        heap, pop = self._heap, heapq.heappop
        while heap and heap[0][0] <= t_end:
            yield pop(heap)


class Network:
    """Connectivity and timing between `n` hosts. The simulation asks it; it never calls back."""

    def __init__(self, n: int, rng: random.Random, default: LinkProfile | None = None, *,
                 bandwidth: float | None = None) -> None:
        self.rng = rng
        self.default = default or LinkProfile()
        # Bytes per second of each host's uplink; None = unlimited.
        self.bandwidth = bandwidth
        self._links: dict[tuple[int, int], LinkProfile] = {}
        self._group: list[int] = [0] * n
        self._blocked: set[tuple[int, int]] = set()
        self._uplink_free: list[float] = [0.0] * n
        # Zone model: host -> zone index, and (zone a, zone b) -> profile; empty when not used.
        self.zone: list[int] = [0] * n
        self._zone_links: dict[tuple[int, int], LinkProfile] = {}
        self.up: list[bool] = [True] * n
        self.partitioned = False
        self.lost = 0  # datagrams dropped by random loss
        self.cut = 0   # datagrams dropped by a partition or a blocked pair

    def add_host(self) -> int:
        self._group.append(0)
        self.zone.append(0)
        self._uplink_free.append(0.0)
        self.up.append(True)
        return len(self.up) - 1

    # -- faults --------------------------------------------------------------------------------------
    def set_link(self, a: int, b: int, profile: LinkProfile, *, both_ways: bool = True) -> None:
        self._links[(a, b)] = profile
        if both_ways:
            self._links[(b, a)] = profile

    def set_zones(self, zone_of_host: Iterable[int], profiles: dict[tuple[int, int], LinkProfile]) -> None:
        """Put host h in zone `zone_of_host[h]`; links between zones a and b take `profiles[(a, b)]` (both
        orders are looked up; `(a, a)` is the inside of zone a). Pairs set with `set_link` keep their own."""
        zones = list(zone_of_host)
        if len(zones) != len(self.zone):
            raise ValueError(f"{len(zones)} zones for {len(self.zone)} hosts")
        self.zone = zones
        table = dict(profiles)
        for (a, b), profile in profiles.items():
            table.setdefault((b, a), profile)
        missing = {(a, b) for a in set(zones) for b in set(zones)} - set(table)
        if missing:
            raise ValueError(f"no link profile for zone pair(s) {sorted(missing)}")
        self._zone_links = table

    def link(self, a: int, b: int) -> LinkProfile:
        """The profile of the link from a to b: its own, else its zone pair's, else the default."""
        if self._links:
            own = self._links.get((a, b))
            if own is not None:
                return own
        if self._zone_links:
            return self._zone_links[(self.zone[a], self.zone[b])]
        return self.default

    def set_default(self, profile: LinkProfile) -> None:
        self.default = profile

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Hosts reach each other only within their group; hosts in no group form one more group."""
        self._group = [0] * len(self._group)
        for g, hosts in enumerate(groups, start=1):
            for h in hosts:
                self._group[h] = g
        self.partitioned = True

    def heal(self) -> None:
        """End every partition and every blocked pair."""
        self._group = [0] * len(self._group)
        self._blocked.clear()
        self.partitioned = False

    def block(self, a: int, b: int) -> None:
        self._blocked.add((a, b))
        self._blocked.add((b, a))
        self.partitioned = True

    def unblock(self, a: int, b: int) -> None:
        self._blocked.discard((a, b))
        self._blocked.discard((b, a))
        self.partitioned = bool(self._blocked) or any(self._group)

    def crash(self, h: int) -> None:
        self.up[h] = False

    def restore(self, h: int) -> None:
        self.up[h] = True

    # -- queries -------------------------------------------------------------------------------------
    def reachable(self, a: int, b: int) -> bool:
        """True if a and b can exchange anything (both up, same side of every partition)."""
        if not (self.up[a] and self.up[b]):
            return False
        if not self.partitioned:
            return True
        return self._group[a] == self._group[b] and (a, b) not in self._blocked

    def connected(self, a: int, b: int) -> bool:
        """Reachability ignoring whether hosts are up: is the path between them cut?"""
        if not self.partitioned:
            return True
        return self._group[a] == self._group[b] and (a, b) not in self._blocked

    def stream_delay(self, a: int, b: int) -> float:
        """One-way delay of a stream message (no loss: TCP retransmits; the retransmit time is ignored)."""
        link = self.link(a, b) if self._links or self._zone_links else self.default
        return link.latency + link.jitter * self.rng.random()

    def datagram(self, a: int, b: int, now: float, size: int) -> float | None:
        """Arrival time of a datagram from a to b sent at `now`, or None if the network drops it.

        Down receivers are checked on arrival by the caller (the host may be restored meanwhile)."""
        if self.partitioned and (self._group[a] != self._group[b] or (a, b) in self._blocked):
            self.cut += 1
            return None
        link = self.link(a, b) if self._links or self._zone_links else self.default
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            self.lost += 1
            return None
        depart = now
        if self.bandwidth is not None:
            depart = max(now, self._uplink_free[a]) + size / self.bandwidth
            self._uplink_free[a] = depart
        return depart + link.latency + (link.jitter * rng.random() if link.jitter else 0.0)
