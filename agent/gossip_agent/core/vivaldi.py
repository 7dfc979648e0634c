"""Vivaldi network coordinates: estimate the RTT between any two members from a few probes each.

WHY. The probe round trips that SWIM already makes measure the RTT to one random peer per probe interval.
Vivaldi (Dabek et al., SIGCOMM 2004) turns those scattered samples into a coordinate per member such that
the distance between two coordinates predicts their RTT, including pairs that never probed each other.
Serf and Consul run the same scheme (`serf rtt`); the refinements below follow their published design
(hashicorp/serf `coordinate/`, and the papers it cites), written afresh for this project:

- **Height-vector space** (Dabek §5.3). A coordinate is a Euclidean vector plus a non-negative height: the
  access-link delay every packet of that member pays (its last hop, its pod network). The distance is
  ``|v_a - v_b| + h_a + h_b``. A star of members that are all 1 ms from each other embeds exactly with heights,
  which a plain Euclidean space cannot do. Units are seconds throughout.
- **Adaptive timestep with an error estimate** (Dabek §4). Each member keeps a relative error estimate in
  (0, error_max]; a sample moves the coordinate by ``cc * w * (rtt - dist)`` with ``w = e_local /
  (e_local + e_remote)``: a confident member is pulled less by an unsure one, and a fresh member (error at its
  maximum) moves fast. The error itself is an exponentially weighted mean of the sample's relative error.
- **Latency filter** (Ledlie et al., NSDI 2007). Per peer, the median of the last `latency_filter_size` raw
  RTTs is used instead of the raw sample: one delayed ack (a GC pause, a full queue) does not fling the
  coordinate across the space. With an even count the LOWER middle value is taken: delays only ever add to a
  round trip, so of two samples the shorter is the likelier truth. This matters because a peer is sampled
  rarely (at N = 30 about once per 30 probes, far peers under zone-aware probing once per ~90): the upper
  middle of two samples would be their maximum, and a single stalled ack would pass unfiltered.
- **Sample weight** (`update(..., weight=)`). A sample may stand for `weight` samples of its kind: the move
  and the error update are those of `weight` identical samples in a row (``1 - (1 - c * w) ** weight`` of the
  gap instead of ``c * w``, so even a large weight never overshoots). The caller uses it to correct a biased
  choice of probe targets (core/topology_state.py: zone-aware probing takes far samples rarely, and without
  the weight the many near samples hold each zone together as a rigid body that the few far ones move
  slowly apart, so cross-zone estimates start short and stay short for a minute).
- **Adjustment term** (Lee et al., ToN 2010). What the Euclidean model cannot express (triangle-inequality
  violations) is corrected by a scalar per member: half the mean of ``rtt - raw_distance`` over a window of
  recent samples. Both ends add their own adjustment to an estimate; a negative adjusted estimate falls back
  to the raw distance.
- **Gravity**. The whole system is free to drift as a rigid body (every sample only fixes differences).
  A weak pull toward the origin, quadratic in the distance to it over `gravity_rho`, keeps coordinates
  bounded without affecting the differences that matter.

HOSTILE INPUT. A peer's coordinate arrives from the network. `check_coordinate` validates it at the edge
(dimensionality, finite components, bounded magnitudes) and `VivaldiClient.update` refuses a bad sample or a
bad RTT (negative, NaN/inf, above `max_rtt`) with a `Rejection` reason that the caller counts; the local
coordinate never becomes NaN, and if arithmetic ever produced a non-finite value the client resets to the
origin and counts the reset.

PURITY. No clock, no I/O: the driver hands in (peer, peer coordinate, measured RTT, RNG) and reads back the
coordinate. The RNG is used only to break the tie when two members sit on the same point.

WIRING (not done in this module; see docs/topology.md): the coordinate rides on ping/ack messages (the prober
puts its coordinate in the ping, the target in the ack; the prober updates on every ack it times), so no extra
packet is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from gossip_agent.core.rng import Rng

#: Two points closer than this (seconds) are treated as the same point; also the floor for a measured RTT.
ZERO_THRESHOLD = 1.0e-6


class Rejection(StrEnum):
    """Why a sample or a peer coordinate was refused (a counted drop, never an exception on the hot path)."""

    RTT_NOT_FINITE = "rtt_not_finite"
    RTT_NEGATIVE = "rtt_negative"
    RTT_TOO_LARGE = "rtt_too_large"
    MALFORMED = "malformed"
    DIMENSIONS = "dimensions"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True, slots=True)
class VivaldiConfig:
    """Tuning of the coordinate system; the defaults are Serf's (8 dimensions) except `cc`, see there."""

    dimensions: int = 8
    #: Error of a member without samples, and the cap on the error estimate.
    error_max: float = 1.5
    #: Weight of one sample in the error estimate (Dabek's c_e).
    ce: float = 0.25
    #: Weight of one sample in the coordinate move (Dabek's c_c). Serf uses 0.25; with one probe per member
    #: per second that needs ~65 s to reach 15% median error on a 200-node random geometric network (15.3%
    #: at 60 s), while 0.35 gets there in ~50 s (11.7% at 60 s) and resolves the inside of a zone faster
    #: (bench/bench_topology.py compares both; docs/topology.md has the figures).
    cc: float = 0.35
    #: Samples kept for the adjustment term; 0 disables it.
    adjustment_window: int = 20
    #: Floor of the height (seconds): heights stay positive so a height never flips sign.
    height_min: float = 10.0e-6
    #: Raw RTT samples per peer whose median is used.
    latency_filter_size: int = 3
    #: Gravity scale (seconds, Serf's value): a sample pulls the vector (|v| / rho)^2 s toward the origin,
    #: 0.4 us at 100 ms out -- negligible against any RTT error, but it cancels slow collective drift.
    gravity_rho: float = 150.0
    #: Largest RTT accepted as a sample (seconds); a longer one is an error, not a measurement.
    max_rtt: float = 10.0
    #: Largest accepted |component|, height or |adjustment| of a peer coordinate (seconds).
    max_magnitude: float = 100.0
    #: Peers whose latency-filter history is kept; beyond it the longest-known is forgotten.
    max_tracked_peers: int = 65_536

    def __post_init__(self) -> None:
        if not 1 <= self.dimensions <= 64:
            raise ValueError(f"dimensions must be within 1..64, got {self.dimensions}")
        for name in ("error_max", "ce", "cc", "height_min", "gravity_rho", "max_rtt", "max_magnitude"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.adjustment_window < 0 or self.latency_filter_size < 1 or self.max_tracked_peers < 1:
            raise ValueError("adjustment_window >= 0, latency_filter_size >= 1 and max_tracked_peers >= 1")


@dataclass(frozen=True, slots=True)
class Coordinate:
    """One member's position, encoding-agnostic: a codec sends ``vec``, ``height``, ``error``, ``adjustment``."""

    vec: tuple[float, ...]
    height: float
    error: float
    adjustment: float = 0.0

    @staticmethod
    def origin(config: VivaldiConfig) -> Coordinate:
        """Where a member without samples starts: the origin, minimum height, maximum error."""
        return Coordinate((0.0,) * config.dimensions, config.height_min, config.error_max, 0.0)

    def as_tuple(self) -> tuple[tuple[float, ...], float, float, float]:
        """Plain values for an encoder (msgpack, JSON)."""
        return self.vec, self.height, self.error, self.adjustment


def check_coordinate(vec: object, height: object, error: object, adjustment: object,
                     config: VivaldiConfig) -> Coordinate | Rejection:
    """Validate a coordinate received from a peer (decoded values of any type); returns it or why not.

    Rejects anything but a list/tuple of numbers and three numbers (MALFORMED), a wrong dimensionality
    (checked before anything is iterated, so a huge list costs nothing), NaN or infinity, and magnitudes
    beyond `max_magnitude` (no real network is 100 s across; such a value can only be a bug or an attack,
    and would pull the local coordinate far away in one step). A negative error or height is rejected; an
    error above `error_max` (e.g. a peer with another tuning) is clamped rather than refused.
    """
    if not isinstance(vec, list | tuple):
        return Rejection.MALFORMED
    if len(vec) != config.dimensions:
        return Rejection.DIMENSIONS
    values: list[float] = []
    for raw in (*vec, height, error, adjustment):
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return Rejection.MALFORMED
        try:
            value = float(raw)
        except OverflowError:  # an integer beyond float range
            return Rejection.OUT_OF_RANGE
        if not math.isfinite(value):
            return Rejection.NOT_FINITE
        values.append(value)
    *components, h, e, adj = values
    bound = config.max_magnitude
    if any(abs(c) > bound for c in components) or not 0.0 <= h <= bound or abs(adj) > bound or e < 0.0:
        return Rejection.OUT_OF_RANGE
    return Coordinate(tuple(components), max(h, config.height_min), min(e, config.error_max), adj)


def raw_distance(a: Coordinate, b: Coordinate) -> float:
    """Height-vector distance in seconds, without the adjustment terms."""
    return math.dist(a.vec, b.vec) + a.height + b.height


def estimate_rtt(a: Coordinate, b: Coordinate) -> float:
    """Estimated RTT between the members at `a` and `b`, in seconds.

    The raw distance plus both adjustment terms; if the adjustments would make it non-positive (they correct
    on average, not per pair), the raw distance is the better guess.
    """
    raw = raw_distance(a, b)
    adjusted = raw + a.adjustment + b.adjustment
    return adjusted if adjusted > 0.0 else raw


def repeated_step(step: float, times: float) -> float:
    """The share of a gap that `times` steps of `step` each close: ``1 - (1 - step) ** times``.

    One sample moves a coordinate by `step` of the gap between estimate and measurement (the gap shrinks to
    ``1 - step`` of itself); `times` such samples in a row leave ``(1 - step) ** times`` of it. Exactly
    `step` for one sample, never above 1 however large `times` is (no overshoot), 0 for `times` = 0.
    """
    if times == 1.0:
        return step
    left: float = max(0.0, 1.0 - step) ** times
    return 1.0 - left


def _is_finite(c: Coordinate) -> bool:
    return all(math.isfinite(x) for x in c.vec) and all(
        math.isfinite(x) for x in (c.height, c.error, c.adjustment))


@dataclass(slots=True)
class VivaldiStats:
    """Counters for metrics: accepted samples, refusals by reason, and resets after a non-finite result."""

    updates: int = 0
    resets: int = 0
    rejected: dict[Rejection, int] = field(default_factory=dict)

    def reject(self, reason: Rejection) -> Rejection:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return reason


class VivaldiClient:
    """The local member's coordinate, moved by each RTT sample to a peer whose coordinate came with the ack."""

    __slots__ = ("_adjust_next", "_adjust_samples", "_filters", "config", "coordinate", "stats")

    def __init__(self, config: VivaldiConfig | None = None) -> None:
        self.config = config or VivaldiConfig()
        self.coordinate = Coordinate.origin(self.config)
        self.stats = VivaldiStats()
        self._filters: dict[str, list[float]] = {}
        self._adjust_samples: list[float] = []
        self._adjust_next = 0

    def accept(self, vec: object, height: object, error: object, adjustment: object) -> Coordinate | None:
        """`check_coordinate` for this client's configuration, counting a refusal in `stats.rejected`."""
        checked = check_coordinate(vec, height, error, adjustment, self.config)
        if isinstance(checked, Rejection):
            self.stats.reject(checked)
            return None
        return checked

    def forget(self, peer: str) -> None:
        """Drop a departed peer's latency history (call on DEAD/LEFT)."""
        self._filters.pop(peer, None)

    def tracked_peers(self) -> int:
        return len(self._filters)

    def update(self, peer: str, peer_coordinate: Coordinate, rtt: float, rng: Rng,
               weight: float = 1.0) -> Rejection | None:
        """Take one measured RTT (seconds) to `peer`, whose coordinate is `peer_coordinate`.

        `peer_coordinate` should come from `check_coordinate` (the edge); its dimensionality and finiteness
        are checked again here because a wrong one would corrupt the local state. `weight` (>= 0, finite;
        the caller's, not the network's) makes the sample count as that many (see the module docstring).
        Returns None when the sample was used, else the counted `Rejection`.
        """
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        cfg = self.config
        if not math.isfinite(rtt):
            return self.stats.reject(Rejection.RTT_NOT_FINITE)
        if rtt < 0.0:
            return self.stats.reject(Rejection.RTT_NEGATIVE)
        if rtt > cfg.max_rtt:
            return self.stats.reject(Rejection.RTT_TOO_LARGE)
        if len(peer_coordinate.vec) != cfg.dimensions:
            return self.stats.reject(Rejection.DIMENSIONS)
        if not _is_finite(peer_coordinate):
            return self.stats.reject(Rejection.NOT_FINITE)

        filtered = max(self._filter(peer, rtt), ZERO_THRESHOLD)
        before = self.coordinate
        moved = self._vivaldi_step(before, peer_coordinate, filtered, rng, weight)
        moved = self._adjust(moved, peer_coordinate, filtered)
        moved = self._gravity(moved)
        if _is_finite(moved):
            self.coordinate = moved
        else:  # defensive: arithmetic on validated inputs should not get here
            self.coordinate = Coordinate.origin(cfg)
            self._adjust_samples.clear()
            self._adjust_next = 0
            self.stats.resets += 1
        self.stats.updates += 1
        return None

    def _filter(self, peer: str, rtt: float) -> float:
        """Append `rtt` to the peer's bounded history and return the median of it."""
        history = self._filters.get(peer)
        if history is None:
            if len(self._filters) >= self.config.max_tracked_peers:
                self._filters.pop(next(iter(self._filters)))
            history = self._filters[peer] = []
        history.append(rtt)
        if len(history) > self.config.latency_filter_size:
            del history[0]
        ordered = sorted(history)
        return ordered[(len(ordered) - 1) // 2]  # the lower middle of an even count (module docstring)

    def _vivaldi_step(self, local: Coordinate, remote: Coordinate, rtt: float, rng: Rng,
                      repeat: float) -> Coordinate:
        cfg = self.config
        dist = estimate_rtt(local, remote)
        relative_error = abs(dist - rtt) / rtt
        total_error = max(local.error + remote.error, ZERO_THRESHOLD)
        weight = local.error / total_error
        step_error = repeated_step(cfg.ce * weight, repeat)
        error = min(local.error + step_error * (relative_error - local.error), cfg.error_max)
        force = repeated_step(cfg.cc * weight, repeat) * (rtt - dist)
        vec, height = self._push(local, remote, force, rng)
        return Coordinate(vec, height, error, local.adjustment)

    def _push(self, local: Coordinate, remote: Coordinate, force: float,
              rng: Rng) -> tuple[tuple[float, ...], float]:
        """Move `local` by `force` seconds along the unit vector from `remote` (positive = away).

        In the height-vector space the difference of two points is (v_a - v_b, h_a + h_b) and its length
        |v_a - v_b| + h_a + h_b, so a push splits between the vector part and the height in that proportion:
        a member too close to everybody grows its height (its access delay) rather than moving sideways.
        """
        diff = [a - b for a, b in zip(local.vec, remote.vec, strict=True)]
        span = math.hypot(*diff)
        if span < ZERO_THRESHOLD:
            # Same point: pick a random unit direction so the two can separate (deterministic given the RNG).
            diff = [rng.random() - 0.5 for _ in diff]
            norm = math.hypot(*diff) or 1.0
            diff = [d / norm for d in diff]
            span = 1.0
        total = span + local.height + remote.height
        vec = tuple(c + force * d / total for c, d in zip(local.vec, diff, strict=True))
        height = local.height + force * (local.height + remote.height) / total
        return vec, max(height, self.config.height_min)

    def _adjust(self, local: Coordinate, remote: Coordinate, rtt: float) -> Coordinate:
        window = self.config.adjustment_window
        if window == 0:
            return local
        sample = rtt - raw_distance(local, remote)
        if len(self._adjust_samples) < window:
            self._adjust_samples.append(sample)
        else:
            self._adjust_samples[self._adjust_next] = sample
        self._adjust_next = (self._adjust_next + 1) % window
        # Half the mean residual (the other end carries the other half in its own adjustment), over the full
        # window even before it has filled: a young member's few residuals are mostly the vectors not having
        # spread out yet, and an eager adjustment would absorb them and stall that spreading.
        adjustment = sum(self._adjust_samples) / (2.0 * window)
        return Coordinate(local.vec, local.height, local.error, adjustment)

    def _gravity(self, local: Coordinate) -> Coordinate:
        """Pull the vector part toward the origin, by (|v| / rho)^2 seconds (quadratic: negligible near it)."""
        span = math.hypot(*local.vec)
        if span < ZERO_THRESHOLD:
            return local
        pull = min((span / self.config.gravity_rho) ** 2, span)
        scale = (span - pull) / span
        return Coordinate(tuple(c * scale for c in local.vec), local.height, local.error, local.adjustment)
