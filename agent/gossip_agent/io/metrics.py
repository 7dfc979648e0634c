"""Prometheus metrics for one agent, in its own CollectorRegistry (never the global one: tests and gossipctl
run many agents per process, and an extension adds its own collectors to the same registry).

Hot paths only bump plain `Counter`s in `AgentStats` (a dict increment); the collector turns them, and the
Node's own `stats`, into metric families when scraped. Nothing is computed while nobody scrapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gossip_agent.core.broadcast import CLASSES
from gossip_agent.core.messages import MemberState
from gossip_agent.core.send_budget import BYTES_KEY, DEFERRED_KEY, DROPPED_KEY, STREAM_CLASSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Node.stats keys exported under their own names (the rest go to gossip_node_events_total{event=...}).
_NODE_COUNTERS = {
    "probes": ("gossip_probes", "Direct probes (UDP pings) sent."),
    "probe_failures": ("gossip_probe_failures", "Probes that got no ack, directly or indirectly."),
    "ping_reqs": ("gossip_ping_reqs", "Indirect probe requests sent to helpers."),
    "acks_received": ("gossip_acks", "Acks received."),
    "nacks_received": ("gossip_nacks", "Nacks received (Lifeguard: a helper heard nothing from the target)."),
    "suspicions": ("gossip_suspicions", "Members this agent marked suspect."),
    "deaths": ("gossip_deaths", "Members this agent marked dead."),
    "left": ("gossip_left", "Members this agent saw leave gracefully."),
    "refutations": ("gossip_refutations", "Times this agent refuted a rumor about itself."),
    "tcp_fallback_acks": ("gossip_tcp_fallback_acks", "Probes answered only over the TCP fallback."),
}
# Node.stats keys per rumor class ("critical"/"normal"): prefix -> (metric name, help), labelled {class=...}.
_CLASS_COUNTERS = {
    BYTES_KEY: ("gossip_rumor_bytes", "Rumor bytes put in outgoing packets, by class (critical: membership "
                "changes and writes with ?priority=critical)."),
    DEFERRED_KEY: ("gossip_budget_deferred", "What gossip.maxBytesPerSecond held back, by class: packets whose "
                   "piggyback it trimmed while rumors waited (they stay queued) and broadcast-tree payloads it "
                   "kept from a neighbour (grafted later, or repaired by anti-entropy); antientropy: messages of "
                   "this agent's anti-entropy sessions that waited for the budget and sessions a peer answered "
                   "\"retry later\"; antientropy_answer: peers' anti-entropy requests answered \"retry later\" "
                   "(HTTP 429)."),
    DROPPED_KEY: ("gossip_budget_dropped", "Rumors of this class the bounded queue evicted before they reached "
                  "every member (anti-entropy repairs state; under a byte budget, what could not wait)."),
}
# Classes beyond the rumor classes, per prefix: anti-entropy's deferrals (core/send_budget.py).
_EXTRA_CLASSES = {DEFERRED_KEY: STREAM_CLASSES}
_CLASS_KEYS = {prefix + cls for prefix in _CLASS_COUNTERS for cls in (*CLASSES, *_EXTRA_CLASSES.get(prefix, ()))}


class NodeView(Protocol):
    """What the collector reads from a Node (a fake in tests)."""

    @property
    def stats(self) -> Mapping[str, int]: ...
    @property
    def health_score(self) -> int: ...
    @property
    def incarnation(self) -> int: ...
    def counts(self) -> Mapping[MemberState, int]: ...
    def queue_depth(self) -> int: ...


class AgentStats:
    """Counters the runtime bumps: plain dicts, exported on scrape."""

    def __init__(self) -> None:
        self.messages: Counter[tuple[str, str]] = Counter()   # (direction, message type)
        self.bytes: Counter[tuple[str, str]] = Counter()      # (direction, kind)
        self.packets: Counter[str] = Counter()                # direction
        self.dropped: Counter[str] = Counter()                # reason
        self.events: Counter[str] = Counter()                 # member event kind
        self.streams: Counter[tuple[str, str]] = Counter()    # (operation, result)
        self.joined = False
        self.member_watchers = 0        # open `GET /v1/members/watch` streams
        self.member_watch_dropped = 0   # of them, disconnected for falling behind
        self.peer_class_bytes: Counter[tuple[str, str]] = Counter()  # (direction, same_zone|cross_zone|unknown)
        self.zone_file_errors = 0       # zone file reads refused (unreadable, oversized, not a zone)


class AgentCollector(Collector):
    def __init__(self, node: NodeView, stats: AgentStats) -> None:
        self.node = node
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        node, s = self.node, self.stats
        node_stats = dict(node.stats)
        for key, (name, doc) in _NODE_COUNTERS.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], node_stats.get(key, 0))
            yield c
        other = CounterMetricFamily("gossip_node_events", "Other protocol events counted by the node.",
                                    labels=["event"])
        for key, value in sorted(node_stats.items()):
            if key not in _NODE_COUNTERS and key not in _CLASS_KEYS:
                other.add_metric([key], value)
        yield other
        for prefix, (name, doc) in _CLASS_COUNTERS.items():
            by_class = CounterMetricFamily(name, doc, labels=["class"])
            for cls in (*CLASSES, *_EXTRA_CLASSES.get(prefix, ())):
                by_class.add_metric([cls], node_stats.get(prefix + cls, 0))
            yield by_class
        msgs = CounterMetricFamily("gossip_messages", "Protocol messages by direction and type.",
                                   labels=["direction", "type"])
        for (direction, mtype), value in sorted(s.messages.items()):
            msgs.add_metric([direction, mtype], value)
        yield msgs
        nbytes = CounterMetricFamily("gossip_bytes", "Bytes on the wire (after encryption) by direction and "
                                     "kind (a UDP packet's first message type, or the stream operation).",
                                     labels=["direction", "kind"])
        for (direction, kind), value in sorted(s.bytes.items()):
            nbytes.add_metric([direction, kind], value)
        yield nbytes
        packets = CounterMetricFamily("gossip_packets", "UDP packets by direction.", labels=["direction"])
        for direction in ("in", "out"):
            packets.add_metric([direction], s.packets.get(direction, 0))
        yield packets
        dropped = CounterMetricFamily("gossip_packets_dropped", "Packets and stream bodies dropped, by reason.",
                                      labels=["reason"])
        for reason, value in sorted(s.dropped.items()):
            dropped.add_metric([reason], value)
        yield dropped
        events = CounterMetricFamily("gossip_member_events", "Membership changes seen, by kind.", labels=["kind"])
        for kind, value in sorted(s.events.items()):
            events.add_metric([kind], value)
        yield events
        streams = CounterMetricFamily("gossip_stream_ops", "Stream (HTTP) peer operations by result.",
                                      labels=["op", "result"])
        for (op, result), value in sorted(s.streams.items()):
            streams.add_metric([op, result], value)
        yield streams
        members = GaugeMetricFamily("gossip_members", "Members in the local table, by state.", labels=["state"])
        counts = node.counts()
        for state in MemberState:
            members.add_metric([state.label], counts.get(state, 0))
        yield members
        yield GaugeMetricFamily("gossip_broadcast_queue_depth", "Rumors waiting to be piggybacked.",
                                value=node.queue_depth())
        yield GaugeMetricFamily("gossip_health_score", "Lifeguard local health score (0 = healthy).",
                                value=node.health_score)
        yield GaugeMetricFamily("gossip_incarnation", "This agent's incarnation number.", value=node.incarnation)
        yield GaugeMetricFamily("gossip_joined", "1 once the agent has joined the cluster.", value=int(s.joined))
        yield GaugeMetricFamily("gossip_member_watchers", "Open membership event streams (/v1/members/watch).",
                                value=s.member_watchers)
        dropped_watchers = CounterMetricFamily("gossip_member_watch_dropped", "Membership event streams "
                                               "disconnected because the client fell behind.")
        dropped_watchers.add_metric([], s.member_watch_dropped)
        yield dropped_watchers


# Bucket bounds in seconds (Prometheus base units). A probe round trip on a LAN is well under a millisecond
# and bounded by the probe interval (an ack after it is no longer waited for); a write's concern waits at
# most its `timeout` (60 s); an anti-entropy session is a few HTTP rounds, longer when it repairs much.
PROBE_RTT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WRITE_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ANTI_ENTROPY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LatencyMetrics:
    """Latency histograms, in seconds. Unlike the counters above they are observed as things happen (a
    histogram cannot be rebuilt from a total at scrape time); one observation is a lock and a bisect, paid
    once per probe, per `w > 1` write and per anti-entropy session, not per packet."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.probe_rtt = Histogram(
            "gossip_probe_rtt_seconds", "Probe round trip: from a UDP ping sent to its ack received from the "
            "probed member itself (acks relayed by an indirect probe are not counted).",
            buckets=PROBE_RTT_BUCKETS, registry=registry)
        self.write_ack = Histogram(
            "gossip_state_write_ack_seconds", "Writes with w > 1: from the local commit until w members hold "
            "the write (writes that time out are counted in gossip_state_write_concern_total instead).",
            buckets=WRITE_ACK_BUCKETS, registry=registry)
        self.rtt_estimate_error = Histogram(
            "gossip_rtt_estimate_relative_error", "Network coordinates: |estimated - measured| / measured RTT, for "
            "the estimate made just before each probe round trip was measured.", buckets=RTT_ERROR_BUCKETS,
            registry=registry)
        self.anti_entropy_session = Histogram(
            "gossip_antientropy_session_seconds", "Anti-entropy sessions this agent initiated and completed, "
            "from the first request to the last answer merged.", buckets=ANTI_ENTROPY_BUCKETS, registry=registry)


#: Relative error |estimate - measured| / measured of the RTT estimate made just before each probe sample.
RTT_ERROR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class TopologyView(Protocol):
    """What the topology collector reads (core/topology_state.TopologyState, or a fake in tests)."""

    @property
    def coordinate_error(self) -> float: ...
    @property
    def coordinates_known(self) -> int: ...
    @property
    def local_zone(self) -> str | None: ...
    def rejections(self) -> Mapping[str, int]: ...


class TopologyCollector(Collector):
    """Network coordinates and zone traffic: the coordinate's own error estimate, how many peers' coordinates
    are known, refused coordinates and RTT samples by reason, and bytes by peer class (same zone, cross zone,
    unknown: either zone not known)."""

    def __init__(self, view: Callable[[], TopologyView | None], stats: AgentStats) -> None:
        self.view = view
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        by_class = CounterMetricFamily("gossip_peer_class_bytes", "UDP bytes by direction and peer class: "
                                       "same_zone, cross_zone, or unknown (a zone not known).",
                                       labels=["direction", "peer_class"])
        for (direction, cls), value in sorted(self.stats.peer_class_bytes.items()):
            by_class.add_metric([direction, cls], value)
        yield by_class
        errors = CounterMetricFamily("gossip_zone_file_errors", "Zone file reads refused (unreadable, oversized "
                                     "or not a zone label); the zone is then unknown.")
        errors.add_metric([], self.stats.zone_file_errors)
        yield errors
        view = self.view()
        if view is None:
            return
        yield GaugeMetricFamily("gossip_coordinate_error", "This agent's Vivaldi error estimate (relative; "
                                "1.5 = no samples yet, lower is more confident).", value=view.coordinate_error)
        yield GaugeMetricFamily("gossip_coordinates_known", "Peers whose network coordinate this agent holds.",
                                value=view.coordinates_known)
        rejected = CounterMetricFamily("gossip_coordinate_rejections", "Peer coordinates and RTT samples "
                                       "refused, by reason.", labels=["reason"])
        for reason, value in sorted(view.rejections().items()):
            rejected.add_metric([reason], value)
        yield rejected


class AgentMetrics:
    """One agent's registry. Extensions register their collectors on `registry`."""

    def __init__(self, node: NodeView, stats: AgentStats) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(node, stats))
        self.latency = LatencyMetrics(self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
