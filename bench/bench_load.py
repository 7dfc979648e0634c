"""Dissemination under load: real agents on 127.0.0.1, sustained writes through random agents, where the bytes go.

For each scenario (N agents, a write rate, a value size, a gossip mode and optional config overrides) a fresh
cluster of real agent processes starts (bench_cluster.py's machinery: seeds one by one, the rest in a burst, all
joined when every agent has logged every other), every agent stamps its applies of the bench's keys (or, with
`--observer watch`, gets a watch stream to this bench: see `latency` and `observer`), and then `--writes` PUTs
of `--size` random bytes,
each to a new key, go to random agents at `--rate` writes/s (open loop: a slow agent does not slow the schedule).
Measured:

  bytes      IP-level bytes between agents from nftables counters of our own (table `gossip_load_<pid>`, output
             hook, created and removed by the bench): UDP to the agents' port range and TCP to or from it, only
             with source AND destination 127.0.0.1. This bench's HTTP client binds 127.0.0.2, so its PUTs, watch
             streams, /v1/status and /metrics polls are never counted. Window: from the first write until the
             last write's acknowledgement plus `--tail` seconds, extended (up to `--drain-timeout`) until every
             agent's rumor queue is empty: retransmissions still queued are part of a write's cost.
  floor      (N-1) copies of key + value + 16 B of version (one 64-bit HLC and a 64-bit counter): what delivering
             each write exactly once to every other agent would cost. `x_floor` = bytes per write / floor.
  by type    UDP datagrams between agents are also captured (AF_PACKET on `lo`, a kernel BPF filter keeping
             only 127.0.0.1 -> 127.0.0.1 UDP to the port range, one copy per datagram) by a child process and
             decoded. The capture is a sample: the filter keeps a random 1 in K (`capture.sample_every`; the
             kernel's random number, independent of the content, so every type is sampled alike) with K chosen
             for about 500 kept datagrams/s from the idle rate and the write rate (`--capture-sample K` to fix
             it): K = 1, the whole traffic, for small runs such as the 8-agent one; about 15 at N=50, 100
             writes/s, where decoding every datagram cost the capture 0.4-0.5 CPU-seconds per 10 s of writes
             (0.07-0.16 at K=15). Only mean
             sizes are taken from it, never totals, so nothing below depends on the sample being complete:
             the counts it holds (`capture.messages`, `packets`, `undecoded_packets`) are of the sample.
             Decoded: each message's msgpack bytes by type (ping, ack, nack, ping_req, alive, suspect, dead,
             state, pull, digest, and the broadcast tree's ihave, graft, prune; type 19 by kind: short_pull,
             short_offer); each datagram's headers (IP 20 + UDP 8 + framing) are shared among its messages in
             proportion to their size. The capture may also miss datagrams (the kernel drops what it cannot
             queue: `capture.kernel_drops`; `capture_kept` is the share of the datagrams asked for, 1 in K of the
             nft count, that it decoded), so the split uses the agents' own
             exact message counts by type (`gossip_messages_total{direction="out"}`) times each type's mean
             wire size from the capture, scaled to the nft UDP total (`udp_split` says which method);
             datagrams the capture could not decode keep their share of the captured bytes. TCP
             (push-pull membership syncs, Merkle anti-entropy, stream probes) is split by operation with the
             agents' own byte counters (`gossip_bytes_total{kind=<op>}`), scaled to the nft TCP total.
             The agents' counters are also reported as they are: `gossip_messages_total{type}` (messages by type)
             and `gossip_bytes_total{kind}`, whose UDP kind is only a datagram's *first* message type (a state
             rumor piggybacked on a ping counts as ping), so they cannot give bytes by message type.
  share      membership/convergence = ping + ack + nack + ping_req + alive + suspect + dead + digest +
             coordinate (UDP) + push-pull (TCP); data = state + pull + short_pull + short_offer + ihave + graft +
             prune (UDP) + anti-entropy (TCP). An agent's Merkle root travels as a convergence digest
             (`digest`; older agents: in their Alive metadata, counted as `alive`).
  latency    write -> all (t100): from just before the PUT is sent to the moment the LAST agent applied the
             change; median, p99, max; writes some agent never applied within `--deliver-timeout` are counted as
             incomplete. The stamps: `sent` is taken by the write schedule itself, immediately before the
             request's one send on an idle keep-alive connection (a raw HTTP/1.1 client; a new connection only
             when every one to that agent is busy, stamped after its connect). An arrival is stamped, with
             `--observer trace` (the default), by the agent itself when it applies the change
             (bench/apply_trace/sitecustomize.py, loaded only into the agents this bench starts: a list append
             per apply, appended to a file every 0.2 s and read by this bench as it waits); with `--observer
             watch`, by a watch reader child when its recv returns the bytes holding the key from that agent's
             watch stream (`GET /v1/watch?prefix=bench/`, which the agent writes right after applying). Both
             use time.perf_counter (CLOCK_MONOTONIC on Linux: one clock in every process). The watch streams
             are load the agents would not otherwise carry (a watch line rendered and written per delivery,
             ~13 % of an agent's CPU per delivery at N=50, and the readers' wake-ups) and their stamps lag
             with the readers' scheduling when the machine is saturated: `watch` is kept to compare.
             The writes of the first second (from the earliest send) meet a cluster that has only just joined:
             `first_s_t100_median_ms` is their median, `t100_p99_after_first_s_ms` the p99 of every later write
             (beside the p99 of all).
  observer   The measuring apparatus costs CPU on the machine the agents run on, and its stamps lag when it waits
             for a CPU. So the watch streams are read by `--watch-readers` child processes (raw sockets, one
             epoll loop, one regex per chunk, arrivals sent to the driver in batches), not by 50 aiohttp streams
             in the driver; PUTs go out on raw keep-alive connections (above); the capture is sampled (above).
             The driver's event loop (while measuring) and the readers run at `--observer-priority` (default
             nice -10; with SCHED_RESET_ON_FORK, and the agents are started before it is raised and keep the
             default); the capture stamps nothing and keeps the default. A `sent` stamp is taken at the send, so
             a late wake-up of the driver shifts the schedule (`schedule_lag_ms_*`) but not t100; a late reader
             makes arrivals late. nice weighs only against the agents: with autogroup scheduling
             (`/proc/sys/kernel/sched_autogroup_enabled`) every other session's load still delays the bench's
             whole session. `rt` (SCHED_RR 1) wakes at once whoever else runs, but a reader then wakes for every
             line or two: after each wake-up it lets lines gather for `--watch-batch-ms` (2; an arrival's stamp
             is at most that late), and it still cost 3x the CPU. Reported: `apparatus` (which, its priority,
             readers, the capture's K, and the CPU-seconds of the driver, the readers and the capture while
             writing and over the window) and the write schedule's own lag (`schedule_lag_ms_*`: how late each
             PUT left against its open-loop due time). `--apparatus classic` is the earlier observer (aiohttp
             streams and PUTs in the driver, `sent` stamped before aiohttp's queueing, every datagram decoded,
             default priority), to A/B the apparatus itself. Measured at N=50, 100 writes/s of 1 KiB, critical
             1/10 (2 cores shared with other sessions, load 17-24; 4 invocations, each rt / priority 0 / classic
             on the same agents): schedule lag p99 1.7-2.0 ms (rt) / 38-175 ms (0) / 134-236 ms (classic); the
             observer's CPU-seconds over 10 s of writes 1.5-2.1 (rt: readers 0.9-1.3) / 0.6-0.9 / 1.1-1.3
             (classic: driver 0.7-0.9, capture 0.4); nice -10 against 0 (one pair): 0.55 / 0.54, lag p99 118 /
             175 ms. The agents' CPU per delivery 0.365-0.375 / 0.358-0.385 / 0.356-0.381 ms: no change beyond
             the noise (a raised observer takes its CPU from the agents sooner, not more of it). But at rt the
             agents' tree repaired itself more (duplicates 19-35 k against 8-10 k with classic, in 4 of 4
             pairs, and worse t100 tails), so rt is not the default. Latencies swung 4-10x between runs of one
             arm (the machine at its knee): compare agents by CPU per delivery, the apparatus by lag and CPU.
  roots      time from the last write's acknowledgement until every agent's published Merkle root
             (GET /v1/status) is the same.
  critical   with `--critical-every K`, every K-th write is PUT with `?priority=critical` (agents that do not
             know the parameter ignore it) and t100 is reported per class, with critical/normal medians.
  budget     with `--budget B`, the agents run with `gossip.maxBytesPerSecond=B` (a row beside each row
             without it): each agent's own outgoing gossip bytes/s while writing and over the whole window
             with its tail and drain (mean, max; from `gossip_bytes_total{direction="out"}` of UDP message
             kinds: payloads, no IP/UDP headers; streams such as anti-entropy are outside the budget) against
             B, and the budget's
             counters: rumor bytes by class, deferrals and drops (`gossip_rumor_bytes_total`,
             `gossip_budget_deferred_total`, `gossip_budget_dropped_total`).
  idle       before the writes, `--idle-seconds` of agent-to-agent bytes/s per agent (same counters), per mode.
  cost       CPU % of one core per agent over the window, incarnation reached (gossip_incarnation), rumor
             queue and drop counters; load average before and after.
  cpu/write  CPU-seconds per delivered write (`cpu_s_per_delivery`): all agents' utime + stime (/proc/PID/stat)
             divided by acknowledged writes x (N-1), while writing and over the whole window, and the kernel
             (stime) share. Far less sensitive to machine load than wall-time latencies: compare arms with it.
             `cpu_spread_per_write_ms`: that CPU per delivery x (N-1) / the cores the agents share
             (`agent_cpus`), the time one write's deliveries fill every core: with more agents than cores, the
             CPU-bound scale of t100 whatever the route. With `--critical-every`, each class's t100 median is
             also given in that unit (`latency_by_class.<class>.t100_over_cpu_spread`).
             `--cpu-profile DIR` says where it goes: every agent attributes its CPU to event-loop callbacks
             (datagrams, HTTP, timers, tasks), the selector, gc and hot functions (bench/cpu_profile/);
             `python bench/cpu_profile/report.py DIR/<scenario>` sums them per applied write.

Serf (`--serf`, if the `serf` binary is installed): the same N, rate and size as user events (one RPC `event`
per write to a random agent, Coalesce off), delivery at each agent stamped when its "Received event:
user-event" log line arrives; bytes from the same nft counters (its RPC ports are outside the counted range).
Serf refuses user events whose name + payload exceed 512 B, so scenarios with larger values have no Serf row.

    python bench/bench_load.py [--n 8,10,50] [--rate 10,100] [--size 1024] [--writes 0 | --seconds 10]
        [--modes push,pull,push-pull] [--broadcasts tree,flood] [--serf] [--issue-scenario] [--sweep]
        [--set gossip.fanout=6] [--baseline DIR] [--repeat K]
        [--apparatus lean|classic] [--observer-priority rt|NICE] [--watch-readers R] [--watch-batch-ms MS]
        [--capture-sample K] [--json FILE] [--keep-logs DIR]

`--broadcasts tree,flood` runs each of our scenarios once per gossip.broadcast path (the broadcast tree against
the flood, before/after in one run). `--baseline DIR` runs each of our scenarios once more, just before it, with
the agents from another source tree (`git archive REV agent | tar -x -C /tmp/base`, then `--baseline
/tmp/base/agent`): a change against its parent commit in one invocation. `--repeat K` runs each of our
scenarios K times in a row, each on a fresh cluster (rows carry `repeat` 0..K-1; Serf's run once): how
repeatable a figure is, not one draw of it. `--issue-scenario` adds the 8-agent case (80 writes of 200 B at
10/s, each mode, and Serf); `--sweep` adds N=10, 10 writes/s runs over gossip.fanout and
gossip.retransmitMult. Needs Linux, root (nft, AF_PACKET) for the byte figures; without them
only latency and convergence are reported.
Every process is a Popen of this bench, stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgpack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_cluster as bc  # noqa: E402  (bench/bench_cluster.py, beside this file)
import serf as serf_mod  # noqa: E402

from gossip_agent.core.codec import SHORT_LABELS, MessageType  # noqa: E402

CLIENT_ADDR = "127.0.0.2"   # the bench's HTTP client: outside the counted traffic
AGENT_ADDR = "127.0.0.1"
VERSION_BYTES = 16          # one write's version in the floor: a 64-bit HLC + a 64-bit counter
SERF_EVENT_LIMIT = 512      # Serf's UserEventSizeLimit (name + payload)
CAPTURE_TARGET_PPS = 500    # lean apparatus: the capture keeps about this many datagrams/s (1 in K, by the kernel)
WATCH_BATCH_MS = 2.0        # lean apparatus: a watch reader's gathering time after each wake-up
OBSERVER_PRIORITY = "-10"   # lean apparatus: the observer's priority while measuring (the agents keep the default)
MEMBERSHIP_TYPES = ("ping", "ack", "nack", "ping_req", "alive", "suspect", "dead", "digest", "coordinate",
                    "peer_coordinates")  # second-hand coordinate rows: overhead, like own coordinates
DATA_TYPES = ("state", "pull", "ihave", "graft", "prune", *SHORT_LABELS.values(), "short_ids")
MEMBERSHIP_OPS = ("pushpull",)
TYPE_NAMES = {int(t): t.name.lower() for t in MessageType}
TYPE_NAMES[int(MessageType.STATE_CRITICAL)] = "state"  # a critical state rumor: the agents count it as state
# The compact forms (types 20-22) likewise: the agents count them as the messages they stand for
# (codec.message_label labels by class), so their captured sizes go into those types' mean sizes.
TYPE_NAMES.update({int(MessageType.COMPACT_PING): "ping", int(MessageType.COMPACT_COORDINATE): "coordinate",
                   int(MessageType.COMPACT_PEER_COORDINATES): "peer_coordinates"})


def type_name(m: list[Any]) -> str:
    """A captured message's type as the agents label it: type 19 by its kind (short pull requests, offers)."""
    if m[0] == MessageType.SHORT_IDS and len(m) > 1:
        return SHORT_LABELS.get(m[1], "short_ids")
    return TYPE_NAMES.get(m[0], f"type{m[0]}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


FIRST_SECOND_S = 1.0  # the first writes meet a freshly joined cluster: their tail is reported apart


def first_second_split(t100: dict[str, float], sent: dict[str, float],
                       split_s: float = FIRST_SECOND_S) -> dict[str, float | None]:
    """t100 of the writes of the first second apart from the rest (ms): the first writes meet a cluster that
    has only just joined, and at N=50, 100 writes/s a run's whole p99 could come from them (first-second median
    144-164 ms, every later second 7-16 ms), so the p99 alone does not say whether the steady state is met.

    `t100` maps each write that reached every agent to its write -> all time (s), `sent` every write sent to its
    send stamp (s, one clock); "the first second" is from the earliest send (incomplete writes count for that
    moment too). Returns the p99 over the writes sent at least `split_s` after it and the median over those sent
    before (None when there are none)."""
    if not sent:
        return {"t100_p99_after_first_s_ms": None, "first_s_t100_median_ms": None}
    first = min(sent.values())
    early = [x for k, x in t100.items() if sent[k] - first < split_s]
    late = [x for k, x in t100.items() if sent[k] - first >= split_s]
    return {"t100_p99_after_first_s_ms": r3(1000 * (pct(late, 99) or 0)) if late else None,
            "first_s_t100_median_ms": r3(1000 * statistics.median(early)) if early else None}


def tail_agents(arrivals: dict[str, dict[str, float]], t100: dict[str, float], top: int = 5) -> dict[str, int]:
    """Which agents were last to apply the slowest 1 % of the writes (at least one write), and how often: the
    agent -> count of the `top` most frequent. A tail that is one or two agents (and the agents they feed on the
    tree) is a slow subtree, not a slow cluster: at N=50, 100 writes/s, the runs that missed p99 <= 250 ms had
    their slow writes last at the same pair of agents, second after second."""
    if not t100:
        return {}
    ranked = sorted(t100, key=t100.__getitem__, reverse=True)
    last: Counter[str] = Counter()
    for key in ranked[:max(1, len(ranked) // 100)]:
        at = arrivals.get(key)
        if at:
            last[max(at, key=at.__getitem__)] += 1
    return dict(last.most_common(top))


def per_agent_spread(values: Sequence[float]) -> dict[str, float] | None:
    """max, mean and how many agents are near zero (under 5 % of the mean) of one per-agent count: for the state
    messages each agent sent, the broadcast tree's fan-out spread (a leaf forwards nothing, an inner member one copy
    per child; under CPU load the member with the most children falls behind first)."""
    if not values:
        return None
    mean = statistics.fmean(values)
    return {"max": round(max(values), 1), "mean": round(mean, 1),
            "near_zero": sum(1 for v in values if v < 0.05 * mean)}


# -- nftables: agent-to-agent bytes only ------------------------------------------------------------------------
class AgentNft(bc.Nft):
    """bench_cluster's counters, narrowed to 127.0.0.1 -> 127.0.0.1, so the client (127.0.0.2) is not counted."""

    def __enter__(self) -> AgentNft:
        if shutil.which("nft") is None or os.geteuid() != 0:
            log("nft or root missing: no wire byte figures")
            return self
        t, rng = f"gossip_load_{os.getpid()}", f"{self.lo}-{self.hi}"
        self.table = t
        ips = ["ip", "saddr", AGENT_ADDR, "ip", "daddr", AGENT_ADDR]
        try:
            bc.Nft._live.add(t)
            self._nft("add", "table", "inet", t)
            for c in self.COUNTERS:
                self._nft("add", "counter", "inet", t, c)
            self._nft("add", "chain", "inet", t, "out", "{ type filter hook output priority 0; policy accept; }")
            self._nft("add", "rule", "inet", t, "out", *ips, "udp", "dport", rng, "counter", "name", "c_udp")
            self._nft("add", "rule", "inet", t, "out", *ips, "tcp", "dport", rng, "counter", "name", "c_tcp_to")
            self._nft("add", "rule", "inet", t, "out", *ips, "tcp", "sport", rng, "counter", "name", "c_tcp_from")
            self.ok = True
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            log(f"nft counters unavailable ({exc}): no wire byte figures")
            self._remove(t)
        return self


def cpu_split(pid: int) -> tuple[int, int] | None:
    """(utime, stime) clock ticks of a process (fields 14 and 15 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]), int(fields[12])


def cpu_per_delivery(a: list[tuple[int, int] | None], b: list[tuple[int, int] | None],
                     deliveries: int) -> dict[str, float | None]:
    """All agents' CPU-seconds between two `cpu_split` readings, per delivery, and the kernel (stime) share."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    user = sum(y[0] - x[0] for x, y in pairs) / bc.CLK_TCK
    system = sum(y[1] - x[1] for x, y in pairs) / bc.CLK_TCK
    return {"cpu_s": round(user + system, 3),
            "per_delivery_ms": round(1000 * (user + system) / deliveries, 4) if deliveries else None,
            "stime_share": round(system / (user + system), 3) if user + system else None}


def cpu_spread_per_write(per_delivery_ms: float | None, n: int, cpus: int) -> float | None:
    """One write's share of the agents' CPU spread over every core the agents share (ms): CPU per delivery x (N-1)
    receivers / cores. The CPU is all of the agents' (membership, digests, HTTP too), so the write's own share is
    somewhat less: a scale, not a hard floor. When the agents outnumber the cores, every delivery of a write
    waits for a core, so a write reaches its last agent after about this long however it travels, in one hop or
    down a tree: it is the CPU-bound scale of write->all t100 on this machine. `agent_cpus` counts the cores of
    this process's affinity (a cgroup CPU quota would make it fewer in effect). A critical write is applied by
    every member as a normal one is, so where both classes' t100 sit near it, the critical class can be faster
    only by costing less CPU (fewer duplicate copies), not by its route (core/critical.py)."""
    if per_delivery_ms is None or n < 2 or cpus < 1:
        return None
    return round(per_delivery_ms * (n - 1) / cpus, 3)


def agent_cpus() -> int:
    """Cores the agents may run on: this process's affinity, which the agents it starts inherit."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def nft_delta(a: dict[str, tuple[int, int]] | None, b: dict[str, tuple[int, int]] | None) -> dict[str, int] | None:
    if a is None or b is None:
        return None
    d = {k: (b[k][0] - a[k][0], b[k][1] - a[k][1]) for k in bc.Nft.COUNTERS}
    return {"udp_bytes": d["c_udp"][1], "udp_packets": d["c_udp"][0],
            "tcp_bytes": d["c_tcp_to"][1] + d["c_tcp_from"][1],
            "tcp_packets": d["c_tcp_to"][0] + d["c_tcp_from"][0],
            "bytes": d["c_udp"][1] + d["c_tcp_to"][1] + d["c_tcp_from"][1]}


# -- packet capture child (AF_PACKET on lo + a classic BPF filter) ----------------------------------------------
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003


SKF_AD_RANDOM = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: the ancillary load of a random 32-bit number


def bpf_program(lo: int, hi: int, sample_every: int = 1) -> list[tuple[int, int, int, int]]:
    """Keep one copy (PACKET_HOST) of IPv4 UDP 127.0.0.1 -> 127.0.0.1 with destination port in [lo, hi]; with
    `sample_every` K > 1 only a random 1 in K of those (the kernel's prandom, independent of the content, so
    every message type is sampled alike): the others are never copied to user space."""
    loop = 0x7F000001
    sample = [(0x20, 0, 0, SKF_AD_RANDOM),   # ld  random (ancillary)
              (0x94, 0, 0, sample_every),    # mod #K
              (0x15, 0, 1, 0)] if sample_every > 1 else []  # jeq 0 -> keep, else drop
    d = len(sample)  # every jump to the final drop skips the sampling instructions too
    return [
        (0x20, 0, 0, 0xFFFFF004),  # ld  pkttype (ancillary)
        (0x15, 0, 13 + d, 0),      # jeq PACKET_HOST (loopback: the outgoing copy is skipped, as libpcap does)
        (0x28, 0, 0, 12),          # ldh ethertype
        (0x15, 0, 11 + d, 0x0800),
        (0x30, 0, 0, 23),          # ldb ip proto
        (0x15, 0, 9 + d, 17),
        (0x20, 0, 0, 26),          # ld  saddr
        (0x15, 0, 7 + d, loop),
        (0x20, 0, 0, 30),          # ld  daddr
        (0x15, 0, 5 + d, loop),
        (0xB1, 0, 0, 14),          # ldxb 4*([14]&0xf)
        (0x48, 0, 0, 16),          # ldh [x+16]: UDP destination port
        (0x35, 0, 2 + d, lo),      # jge lo
        (0x25, 1 + d, 0, hi),      # jgt hi -> drop
        *sample,
        (0x06, 0, 0, 0x40000),     # ret: keep the whole frame
        (0x06, 0, 0, 0),           # drop
    ]


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def capture_child(lo: int, hi: int, out: str, sample_every: int = 1, priority: str = "0") -> int:
    """Runs in a child process until SIGTERM; writes per-message-type byte counts of the datagrams it kept (1 in
    `sample_every`, chosen by the kernel) to `out` (JSON)."""
    observer_priority(priority)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE (root)
    attach_filter(sock, bpf_program(lo, hi, sample_every))
    sock.bind(("lo", 0))
    sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the kernel's counters
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock.settimeout(0.2)
    msgs: Counter[str] = Counter()
    msg_bytes: Counter[str] = Counter()
    shared: defaultdict[str, float] = defaultdict(float)   # message bytes + its share of the datagram's headers
    packets = wire = undecoded = undecoded_bytes = 0
    buf = bytearray(1 << 18)
    print("ready", flush=True)
    while not stop:
        try:
            n = sock.recv_into(buf)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        frame = memoryview(buf)[:n]
        ihl = (frame[14] & 0x0F) * 4
        ip_len = n - 14
        payload = bytes(frame[14 + ihl + 8:])
        packets += 1
        wire += ip_len
        try:
            if not payload or payload[0] != 0x01:
                raise ValueError("not a plaintext packet")
            _sender, messages = msgpack.unpackb(payload[1:], raw=True, strict_map_key=False)
            sizes = [(type_name(m), len(msgpack.packb(m, use_bin_type=True))) for m in messages]
        except Exception:  # any garbage: counted, never fatal
            undecoded += 1
            undecoded_bytes += ip_len
            continue
        total = sum(s for _, s in sizes) or 1
        for name, size in sizes:
            msgs[name] += 1
            msg_bytes[name] += size
            shared[name] += ip_len * size / total
    st = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    seen, drops = struct.unpack("II", st)
    Path(out).write_text(json.dumps({
        "packets": packets, "wire_bytes": wire, "undecoded_packets": undecoded, "undecoded_bytes": undecoded_bytes,
        "kernel_seen": seen, "kernel_drops": drops, "sample_every": sample_every, "messages": dict(msgs),
        "message_bytes": dict(msg_bytes),
        "wire_bytes_by_type": {k: round(v) for k, v in shared.items()}}))
    return 0


class Capture:
    """The capture child: started before a window, stopped (SIGTERM) after it; None figures if unavailable."""

    def __init__(self, lo: int, hi: int, workdir: Path, sample_every: int = 1, priority: str = "0") -> None:
        self.lo, self.hi, self.sample_every, self.priority = lo, hi, sample_every, priority
        self.out = workdir / f"capture-{lo}-{time.monotonic_ns()}.json"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> bool:
        if os.geteuid() != 0:
            return False
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--capture-child",
                                      f"{self.lo},{self.hi},{self.out},{self.sample_every},{self.priority}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        bc._PROCS.append(self.proc)  # type: ignore[arg-type]  # stopped at exit like every agent
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            log(f"capture unavailable: {self.proc.stderr.read()[-300:] if self.proc.stderr else ''}")
            self.stop()
            return False
        return True

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        try:
            return dict(json.loads(self.out.read_text()))
        except (OSError, ValueError):
            return None


def capture_sample_every(n: int, rate: float, idle_pps_per_agent: float | None, target: float) -> int:
    """The capture's 1-in-K: enough that it keeps about `target` datagrams/s, from the expected datagram rate (the
    idle rate measured just before, plus about 1.5 datagrams per delivery: the tree's eager copy, some ihave and
    graft traffic and duplicates under load). Small runs (under `target`) are captured whole."""
    expected = n * ((idle_pps_per_agent if idle_pps_per_agent is not None else 10.0) + 1.5 * rate)
    return max(1, int(expected // target)) if target > 0 else 1


# -- the observer's own priority and cost -------------------------------------------------------------------------
def observer_priority(spec: str) -> Callable[[], None] | None:
    """Run this thread (the driver's event loop, a watch reader, the capture) ahead of the agents, which keep the
    default, so the observer's stamps are not queued behind 50 busy agents: `rt` is SCHED_RR priority 1 (runs
    as soon as it wakes, ahead of every normal task, whichever session or autogroup it belongs to), an integer
    is a nice value (only weighs against the tasks of its own autogroup: the agents, not other sessions), `0`
    leaves it. Either way with SCHED_RESET_ON_FORK: a process started from this thread (the capture child; the
    agents are started before) begins at the default. Returns the undo, None if unchanged (or not permitted:
    not root)."""
    if spec in ("", "0"):
        return None
    tid = threading.get_native_id()
    try:
        policy, param = os.sched_getscheduler(tid), os.sched_getparam(tid)
        nice = os.getpriority(os.PRIO_PROCESS, tid)
        if spec == "rt":
            os.sched_setscheduler(tid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        else:
            os.sched_setscheduler(tid, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, int(spec))  # on Linux: this thread only
    except (OSError, ValueError) as exc:
        log(f"observer priority {spec} not set ({exc}): the observer runs at the agents' priority")
        return None

    def undo() -> None:
        os.sched_setscheduler(tid, policy, param)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return undo


def own_cpu_s() -> float:
    """This process's CPU-seconds so far (every thread; user + system)."""
    t = os.times()
    return t.user + t.system


def pid_cpu_s(pid: int | None) -> float | None:
    split = cpu_split(pid) if pid is not None else None
    return (split[0] + split[1]) / bc.CLK_TCK if split is not None else None


# -- watch readers: the agents' watch streams, read outside the driver ---------------------------------------------
WATCH_KEY_RX = re.compile(rb'"key": ?"(bench/[^"]*)"')
FLUSH_S = 0.1  # a watch reader's batches of arrivals to the driver


def watch_reader_child(spec: str, priority: str, batch_s: float = 0.0) -> int:
    """Runs in a child process until SIGTERM or EOF on stdin: opens `GET /v1/watch?prefix=bench/` on every agent
    in `spec` ("index:port,..."), reads the raw bytes (non-blocking sockets, one epoll loop), finds the keys with
    one regex over each chunk (a partial last line waits for the rest) and stamps every key in a chunk with the
    time it was read (time.perf_counter: CLOCK_MONOTONIC on Linux, the same clock as the driver's). It writes
    lines to stdout: `R <index>` when a stream is watching, `E <index> <text>` for an error line or a stream that
    ended, and `A <json [[index, key, t], ...]>` batches of arrivals (every 0.1 s: the stamps are taken here, so
    the driver, woken at its own priority for each batch, need not hear of them sooner). With `batch_s`, it
    sleeps that long after each wake-up before reading (fewer wake-ups, stamps at most that late)."""
    import selectors
    observer_priority(priority)
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sel = selectors.DefaultSelector()
    tails: dict[int, bytes] = {}
    watching: set[int] = set()
    out = sys.stdout.buffer
    for item in spec.split(","):
        idx, port = (int(x) for x in item.split(":"))
        s = socket.create_connection((AGENT_ADDR, port), timeout=10, source_address=(CLIENT_ADDR, 0))
        s.sendall(f"GET /v1/watch?prefix=bench/ HTTP/1.1\r\nHost: {AGENT_ADDR}:{port}\r\n\r\n".encode())
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, idx)
        tails[idx] = b""
    sel.register(sys.stdin, selectors.EVENT_READ, -1)  # the driver gone: stop
    pending: list[tuple[int, str, float]] = []
    flushed = time.perf_counter()
    find = WATCH_KEY_RX.finditer
    while not stop and tails:
        events = sel.select(0.02)
        if events and batch_s > 0:
            # At `rt` priority a reader woken for every line would cost three times the CPU of one that wakes
            # behind busy agents: after each wake-up let the lines gather for `batch_s`, then read every stream
            # ready by then. Each stamp is then at most `batch_s` late (its read, not its arrival).
            time.sleep(batch_s)
            events = sel.select(0)
        for key, _ in events:
            idx = key.data
            if idx < 0:
                stop = True
                break
            sock = cast(socket.socket, key.fileobj)  # idx >= 0: one of the watch streams registered above
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, why = b"", str(exc)
            else:
                why = "closed"
            t = time.perf_counter()
            if not data:
                sel.unregister(sock)
                sock.close()
                del tails[idx]
                out.write(f"E {idx} watch stream {why}\n".encode())
                out.flush()
                continue
            buf = tails[idx] + data if tails[idx] else data
            cut = buf.rfind(b"\n") + 1
            tails[idx] = buf[cut:]
            if not cut:
                continue
            for m in find(buf, 0, cut):
                pending.append((idx, m.group(1).decode(), t))
            if idx not in watching and b'"watching"' in buf:
                watching.add(idx)
                out.write(f"R {idx}\n".encode())
                out.flush()
            if b'"error"' in buf:
                at = buf.index(b'"error"')
                out.write(b"E %d " % idx + buf[max(0, at - 100):at + 100].replace(b"\n", b" ") + b"\n")
                out.flush()
        now = time.perf_counter()
        if pending and now - flushed >= FLUSH_S:
            out.write(b"A " + json.dumps(pending, separators=(",", ":")).encode() + b"\n")
            out.flush()
            pending = []
            flushed = now
    if pending:
        out.write(b"A " + json.dumps(pending, separators=(",", ":")).encode() + b"\n")
        out.flush()
    return 0


class WatchReaders:
    """The watch streams in `count` reader child processes (agents dealt round-robin): their arrivals land in
    `arrivals` (key -> agent -> time) through the driver's event loop, in batches; `ready` holds the agents
    whose stream is watching."""

    def __init__(self, agents: Sequence[bc.Agent], count: int, priority: str, batch_ms: float,
                 arrivals: dict[str, dict[str, float]]) -> None:
        self.names = [a.name for a in agents]
        self.arrivals = arrivals
        self.ready: set[str] = set()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.partial: dict[int, bytes] = {}
        loop = asyncio.get_running_loop()
        count = max(1, min(count, len(agents)))
        for r in range(count):
            spec = ",".join(f"{i}:{a.port}" for i, a in enumerate(agents) if i % count == r)
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()),
                                     f"--watch-reader={priority}/{batch_ms:g}/{spec}"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            bc._PROCS.append(proc)
            self.procs.append(proc)
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            os.set_blocking(fd, False)
            self.partial[fd] = b""
            loop.add_reader(fd, self._on_readable, fd)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            return
        buf = self.partial[fd] + data
        cut = buf.rfind(b"\n") + 1
        self.partial[fd] = buf[cut:]
        arrivals, names = self.arrivals, self.names
        for line in buf[:cut].splitlines():
            kind, _, rest = line.partition(b" ")
            if kind == b"A":
                for idx, key, t in json.loads(rest):
                    arrivals.setdefault(key, {}).setdefault(names[idx], t)
            elif kind == b"R":
                self.ready.add(names[int(rest)])
            elif kind == b"E":
                idx, _, text = rest.partition(b" ")
                log(f"{names[int(idx)]}: watch: {text[:200]!r}")

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for p in self.procs:
            if p.stdout is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(p.stdout.fileno())
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()


# -- PUTs: a raw HTTP/1.1 client, so the `sent` stamp is the send ------------------------------------------------
class PutConn(asyncio.Protocol):
    """One keep-alive connection to an agent for PUTs, one request at a time: the request is written (one send)
    right after the caller stamps it; the response (status line, Content-Length body) resolves `waiter`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection's

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = self.buf[:end].decode("latin-1").lower()
        m = re.search(r"\r\ncontent-length: *(\d+)", head)
        length = int(m.group(1)) if m else 0
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length:]
        waiter, self.waiter = self.waiter, None
        if "\r\nconnection: close" in head:
            self.closed = True
        if not waiter.done():
            waiter.set_result(int(head.split(" ", 2)[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("connection lost"))
        self.waiter = None


class Putter:
    """PUTs to the agents over pooled PutConns (127.0.0.2 -> the agent, like aiohttp's): `send` stamps and writes
    in the caller's step (no task, no pooling logic between the stamp and the send) when an idle connection is
    at hand; `wait` reads the response."""

    def __init__(self) -> None:
        self.idle: dict[int, list[PutConn]] = {}

    async def connect(self, port: int) -> PutConn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(PutConn, AGENT_ADDR, port, local_addr=(CLIENT_ADDR, 0))
        return conn

    async def warm(self, ports: Sequence[int]) -> None:
        conns = await asyncio.gather(*(self.connect(p) for p in ports))
        for p, c in zip(ports, conns, strict=True):
            self.idle.setdefault(p, []).append(c)

    def take(self, port: int) -> PutConn | None:
        pool = self.idle.get(port)
        while pool:
            c = pool.pop()
            if not c.closed:
                return c
        return None

    @staticmethod
    def send(conn: PutConn, request: bytes) -> float:
        """Stamp, then write the whole request (one send on an idle connection); returns the stamp."""
        conn.waiter = asyncio.get_running_loop().create_future()
        t = time.perf_counter()
        assert conn.transport is not None
        conn.transport.write(request)
        return t

    async def wait(self, port: int, conn: PutConn, timeout: float) -> int:
        assert conn.waiter is not None
        try:
            status = await asyncio.wait_for(conn.waiter, timeout)
        except BaseException:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
            raise
        if conn.closed:
            if conn.transport is not None:
                conn.transport.close()
        else:
            self.idle.setdefault(port, []).append(conn)
        return status

    def close(self) -> None:
        for pool in self.idle.values():
            for c in pool:
                if c.transport is not None:
                    c.transport.close()
        self.idle.clear()


def put_request(port: int, path: str, body: bytes) -> bytes:
    return (f"PUT {path} HTTP/1.1\r\nHost: {AGENT_ADDR}:{port}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# -- scenarios --------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    impl: str                      # ours | serf
    n: int
    rate: float
    size: int
    writes: int
    mode: str = "push-pull"
    sets: list[str] = field(default_factory=list)
    label: str = ""
    critical_every: int = 0        # every k-th write asks for ?priority=critical (0: none)
    budget: int = 0                # gossip.maxBytesPerSecond of our agents (0: unlimited)
    src: str = ""                  # run our agents from this source tree (--baseline), not this checkout's
    repeat: int = 0                # which of the `repeats` fresh-cluster runs of this scenario (--repeat)
    repeats: int = 1

    def title(self) -> str:
        extra = f" {' '.join(self.sets)}" if self.sets else ""
        if self.src:
            extra += " [baseline]"
        if self.repeats > 1:
            extra += f" repeat {self.repeat}/{self.repeats}"
        if self.critical_every:
            extra += f" critical 1/{self.critical_every}"
        if self.budget:
            extra += f" budget {self.budget} B/s"
        what = self.mode if self.impl == "ours" else "serf"
        return f"{self.label or 'load'}: N={self.n} {self.rate:g}/s {self.size} B x{self.writes} {what}{extra}"


def metrics_snapshot(text: str) -> dict[str, float]:
    from gossip_agent.cli.client import parse_metrics
    return parse_metrics(text)


def labelled(m: dict[str, float], name: str, label: str, where: str = "") -> dict[str, float]:
    """{label value: sum} over the series of `name` whose labels contain `where`."""
    out: defaultdict[str, float] = defaultdict(float)
    rx = re.compile(rf'{label}="([^"]*)"')
    for k, v in m.items():
        if k.startswith(name + "{") and where in k:
            mm = rx.search(k)
            if mm:
                out[mm.group(1)] += v
    return dict(out)


def sum_deltas(before: list[dict[str, float]], after: list[dict[str, float]], name: str, label: str,
               where: str = "") -> dict[str, float]:
    total: defaultdict[str, float] = defaultdict(float)
    for b, a in zip(before, after, strict=True):
        lb, la = labelled(b, name, label, where), labelled(a, name, label, where)
        for k, v in la.items():
            total[k] += v - lb.get(k, 0.0)
    return {k: v for k, v in total.items() if v}


# --cpu-profile: the directory whose sitecustomize.py attributes an agent's CPU, and the variable naming where.
CPU_PROFILE_HOOK = str(Path(__file__).resolve().parent / "cpu_profile")
CPU_PROFILE_ENV = "GOSSIP_CPU_PROFILE_DIR"
# --observer trace (the default): the directory whose sitecustomize.py stamps each apply inside the agents (it
# loads the CPU profile hook too when that is asked for), and the variable naming where the stamps go.
APPLY_TRACE_HOOK = str(Path(__file__).resolve().parent / "apply_trace")
APPLY_TRACE_ENV = "GOSSIP_APPLY_TRACE_DIR"


def agent_hook_dir() -> str | None:
    """The sitecustomize directory the agents we start need on their PYTHONPATH (None: no hook)."""
    if os.environ.get(APPLY_TRACE_ENV):
        return APPLY_TRACE_HOOK
    if os.environ.get(CPU_PROFILE_ENV):
        return CPU_PROFILE_HOOK
    return None


class ApplyTrace:
    """The agents' apply stamps (bench/apply_trace/sitecustomize.py), read as they are appended: `poll()` adds
    each new `key TAB time` line of `DIR/<pid>.trace` to `arrivals` (key -> agent name -> first time)."""

    def __init__(self, directory: Path, names: dict[int, str], arrivals: dict[str, dict[str, float]]) -> None:
        self.directory, self.names, self.arrivals = directory, names, arrivals
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def poll(self) -> None:
        for pid, name in self.names.items():
            path = self.directory / f"{pid}.trace"
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets.get(path, 0))
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            data = self._partial.pop(path, b"") + data
            lines = data.split(b"\n")
            if lines[-1]:
                self._partial[path] = lines[-1]
            for line in lines[:-1]:
                key, _, stamp = line.partition(b"\t")
                with contextlib.suppress(ValueError):
                    self.arrivals.setdefault(key.decode(), {}).setdefault(name, float(stamp))



class OursFrom(bc.Ours):
    """Our agents from another source tree (`--baseline`, e.g. an older commit's agent/ from `git archive`):
    before and after in one invocation, on the same machine state (with its PYTHONPATH added to the `env` that
    bench_cluster.py's command starts with)."""

    def __init__(self, overrides: list[str], src: str) -> None:
        super().__init__(overrides)
        self.src = src

    def command(self, name: str, port: int, rpc_port: int, seeds: Sequence[int], workdir: Path) -> list[str]:
        root = Path(self.src)  # a whole source tree or its agent/ directory
        path = root / "agent" if (root / "agent" / "gossip_agent").is_dir() else root
        bc.precompile(path / "gossip_agent")  # as the other arm's (bench_cluster.py precompile)
        # With --cpu-profile or the apply trace the baseline arm is hooked too (the hook directory after the tree).
        hook = agent_hook_dir()
        pythonpath = f"{path}{os.pathsep}{hook}" if hook else str(path)
        env, *command = super().command(name, port, rpc_port, seeds, workdir)  # ["env", "VAR=value"..., python, ...]
        return [env, f"PYTHONPATH={pythonpath}", *command]


class OursLoad:
    """One scenario on our agents."""

    def __init__(self, sc: Scenario, args: argparse.Namespace, workdir: Path, ports: bc.Ports, hub: bc.LogHub):
        self.sc, self.args, self.workdir = sc, args, workdir
        sets = [f"gossip.mode={sc.mode}", *sc.sets]
        self.cluster = bc.Cluster(OursFrom(sets, sc.src) if sc.src else bc.Ours(sets), hub, workdir, ports, sc.n)
        self.restore_priority: Callable[[], None] | None = None

    async def get(self, session: aiohttp.ClientSession, agent: bc.Agent, path: str) -> bytes | None:
        try:
            async with session.get(f"http://{AGENT_ADDR}:{agent.port}{path}",
                                   timeout=aiohttp.ClientTimeout(total=10)) as r:
                return await r.read() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def metrics(self, session: aiohttp.ClientSession, agents: Sequence[bc.Agent]) -> list[dict[str, float]]:
        bodies = await asyncio.gather(*(self.get(session, a, "/metrics") for a in agents))
        return [metrics_snapshot(b.decode()) if b else {} for b in bodies]

    async def queue_depth(self, session: aiohttp.ClientSession, agents: Sequence[bc.Agent]) -> int:
        """Rumors queued in all agents (gossip_broadcast_queue_depth)."""
        return int(sum(m.get("gossip_broadcast_queue_depth", 0.0) for m in await self.metrics(session, agents)))

    async def roots(self, session: aiohttp.ClientSession, agents: Sequence[bc.Agent]) -> list[str | None]:
        bodies = await asyncio.gather(*(self.get(session, a, "/v1/status") for a in agents))
        out: list[str | None] = []
        for b in bodies:
            try:
                out.append(json.loads(b)["state"]["root"] if b else None)
            except (ValueError, KeyError, TypeError):
                out.append(None)
        return out

    async def run(self) -> dict[str, Any]:
        sc, cl = self.sc, self.cluster
        started = bc.start_cluster(cl, sc.n, batch=20 if sc.n > 60 else 0, timeout=self.args.join_timeout)
        if not started.get("converged"):
            raise RuntimeError(f"{sc.title()}: the cluster did not converge: {started}")
        agents = cl.live()
        try:
            return await self._measure(agents, started)
        finally:
            self.reset_priority()
            cl.stop_all()

    def reset_priority(self) -> None:
        if self.restore_priority is not None:
            self.restore_priority()
            self.restore_priority = None

    async def _measure(self, agents: list[bc.Agent], started: dict[str, Any]) -> dict[str, Any]:
        args = self.args
        connector = aiohttp.TCPConnector(limit=0, local_addr=(CLIENT_ADDR, 0))
        arrivals: dict[str, dict[str, float]] = {}
        key_rx = WATCH_KEY_RX
        lean = args.apparatus == "lean"
        traced = args.observer == "trace"
        async with aiohttp.ClientSession(connector=connector) as session:
            ready: set[str] = set()
            readers: WatchReaders | None = None
            trace: ApplyTrace | None = None
            if traced:  # no watch streams: the agents stamp their applies themselves
                trace = ApplyTrace(Path(os.environ[APPLY_TRACE_ENV]), {a.pid: a.name for a in agents if a.pid},
                                   arrivals)
                ready = {a.name for a in agents}
            elif lean:  # the streams in reader children; the classic apparatus reads them here (aiohttp)
                readers = WatchReaders(agents, args.watch_readers, args.observer_priority, args.watch_batch_ms,
                                       arrivals)
                ready = readers.ready

            async def watch(a: bc.Agent) -> None:
                url = f"http://{AGENT_ADDR}:{a.port}/v1/watch?prefix=bench/"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
                    async for line in r.content:
                        now = time.perf_counter()
                        if b'"watching"' in line:
                            ready.add(a.name)
                            continue
                        m = key_rx.search(line)
                        if m:
                            arrivals.setdefault(m.group(1).decode(), {}).setdefault(a.name, now)
                        elif b'"error"' in line:
                            log(f"{a.name}: watch: {line[:200]!r}")

            watchers = [] if lean or traced else [asyncio.create_task(watch(a)) for a in agents]
            deadline = time.monotonic() + 60
            while len(ready) < len(agents) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if len(ready) < len(agents):
                raise RuntimeError(f"only {len(ready)} of {len(agents)} watch streams opened")
            await asyncio.sleep(args.settle)
            idle = await asyncio.to_thread(idle_traffic, self.cluster, len(agents), args.idle_seconds)
            try:
                result = await self._window(session, agents, arrivals, started, idle,
                                            readers.pids if readers else [], trace)
                result["idle"] = idle
                return result
            finally:
                if readers is not None:
                    readers.stop()
                for w in watchers:
                    w.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)

    async def _window(self, session: aiohttp.ClientSession, agents: list[bc.Agent],
                      arrivals: dict[str, dict[str, float]], started: dict[str, Any],
                      idle: dict[str, Any] | None, reader_pids: list[int],
                      trace: ApplyTrace | None = None) -> dict[str, Any]:
        sc, args = self.sc, self.args
        lean = args.apparatus == "lean"
        lo, hi = self.cluster.port_range
        rng = random.Random(args.seed)
        run_tag = f"{sc.n}-{time.monotonic_ns() % 10**9}"
        keys = [f"bench/{run_tag}/{i}" for i in range(sc.writes)]
        sent: dict[str, float] = {}
        writer_of: dict[str, str] = {}
        acked: dict[str, float] = {}
        errors: Counter[str] = Counter()
        lags: list[float] = []
        critical: set[str] = set()
        load_before = bc.loadavg()
        wall_start = time.time()
        sample_every = 1
        if lean:
            sample_every = args.capture_sample or capture_sample_every(
                sc.n, sc.rate, (idle or {}).get("udp_pps_per_agent"), CAPTURE_TARGET_PPS)
        prio = args.observer_priority if lean else "0"
        # This thread (the event loop) and the capture child started now; restored when the scenario ends, before
        # any agent of a later scenario is started (they must inherit the default).
        self.restore_priority = observer_priority(prio)
        # The capture stamps nothing (the kernel queues what it keeps): it runs at the default priority.
        cap = Capture(lo, hi, self.workdir, sample_every)
        captured = cap.start()
        # The writes, drawn before the window (same draws as the classic apparatus: agent, then body).
        plan_w: list[tuple[bc.Agent, str, bytes, bytes]] = []
        if lean:
            for i in range(sc.writes):
                a = agents[rng.randrange(len(agents))]
                body = os.urandom(sc.size)
                query = "?priority=critical" if sc.critical_every and i % sc.critical_every == 0 else ""
                plan_w.append((a, query, body, put_request(a.port, f"/v1/kv/{keys[i]}{query}", body)))
        putter = Putter()
        if lean:
            await putter.warm([a.port for a in agents])
        observer_pids = {"capture": [cap.pid] if captured and cap.pid else [], "readers": reader_pids}

        def observer_cpu() -> dict[str, float | None]:
            parts = {k: [pid_cpu_s(pid) for pid in pids] for k, pids in observer_pids.items()}
            return {"driver": own_cpu_s(),
                    **{k: sum(x for x in v if x is not None) if v else None for k, v in parts.items()}}

        with AgentNft(lo, hi) as nft:
            m0 = await self.metrics(session, agents)
            ticks0 = [bc.cpu_ticks(a.pid) for a in agents]
            split0 = [cpu_split(a.pid) for a in agents]
            c0 = nft.read()
            obs0 = observer_cpu()
            t_start = time.perf_counter()

            async def finish(key: str, port: int, conn: PutConn | None, request: bytes) -> None:
                """A lean PUT's response (or, with no idle connection at the due time, its connect first)."""
                try:
                    if conn is None:
                        conn = await putter.connect(port)
                        sent[key] = putter.send(conn, request)
                    status = await putter.wait(port, conn, 30)
                except (OSError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    return
                if status != 200:
                    errors[str(status)] += 1
                    return
                acked[key] = time.perf_counter()

            async def put(i: int) -> None:
                a = agents[rng.randrange(len(agents))]
                key = keys[i]
                writer_of[key] = a.name
                body = os.urandom(sc.size)
                query = ""
                if sc.critical_every and i % sc.critical_every == 0:
                    query = "?priority=critical"
                    critical.add(key)
                sent[key] = time.perf_counter()
                try:
                    async with session.put(f"http://{AGENT_ADDR}:{a.port}/v1/kv/{key}{query}", data=body,
                                           timeout=aiohttp.ClientTimeout(total=30)) as r:
                        await r.read()
                        if r.status != 200:
                            errors[str(r.status)] += 1
                            return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    return
                acked[key] = time.perf_counter()

            tasks = []
            for i in range(sc.writes):
                due = t_start + i / sc.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lags.append(time.perf_counter() - due)
                if not lean:
                    tasks.append(asyncio.create_task(put(i)))
                    continue
                a, query, _body, request = plan_w[i]
                key = keys[i]
                writer_of[key] = a.name
                if query:
                    critical.add(key)
                conn = putter.take(a.port)
                if conn is not None:  # stamped and sent here, in the schedule's own step
                    sent[key] = putter.send(conn, request)
                tasks.append(asyncio.create_task(finish(key, a.port, conn, request)))
            await asyncio.gather(*tasks)
            t_last = time.perf_counter()
            obs_last = observer_cpu()
            c_last = nft.read()
            ticks_last = [bc.cpu_ticks(a.pid) for a in agents]
            split_last = [cpu_split(a.pid) for a in agents]
            m_last = await self.metrics(session, agents) if sc.budget else m0
            # Roots equal, then everything delivered (bounded), then the tail.
            roots_equal: float | None = None
            distinct_max = 0
            while time.perf_counter() - t_last < args.converge_timeout:
                roots = await self.roots(session, agents)
                distinct = len(set(roots))
                distinct_max = max(distinct_max, distinct)
                if distinct == 1 and None not in roots:
                    roots_equal = time.perf_counter() - t_last
                    break
                await asyncio.sleep(0.05)
            n = len(agents)
            poll = trace.poll if trace is not None else (lambda: None)
            poll()
            while time.perf_counter() - t_last < args.deliver_timeout and any(
                    len(arrivals.get(k, {})) < n for k in acked):
                await asyncio.sleep(0.25 if trace is not None else 0.05)
                poll()
            rest = t_last + args.tail - time.perf_counter()
            if rest > 0:
                await asyncio.sleep(rest)
            # Rumors still queued will be sent: wait (bounded) until every agent's rumor queue is empty, so the
            # bytes are the whole cost of the writes, not the part sent before an arbitrary cut.
            queued_at_tail = await self.queue_depth(session, agents)
            queued = queued_at_tail
            while queued and time.perf_counter() - t_last < args.tail + args.drain_timeout:
                await asyncio.sleep(0.25)
                queued = await self.queue_depth(session, agents)
            t_end = time.perf_counter()
            obs_end = observer_cpu()
            c_end = nft.read()
            ticks_end = [bc.cpu_ticks(a.pid) for a in agents]
            split_end = [cpu_split(a.pid) for a in agents]
            m1 = await self.metrics(session, agents)
        if trace is not None:  # the stamps of the last FLUSH_EVERY: appended by now
            await asyncio.sleep(0.5)
            trace.poll()
        putter.close()
        capture = cap.stop() if captured else None
        self.reset_priority()
        load_after = bc.loadavg()

        def obs_delta(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
            d = {k: r3(bk - v) if v is not None and (bk := b[k]) is not None else None for k, v in a.items()}
            d["total"] = r3(sum(v for v in d.values() if v is not None))
            return d

        t100_of = {k: max(arrivals[k].values()) - sent[k] for k in acked if len(arrivals.get(k, {})) >= n}
        t100 = list(t100_of.values())
        by_class: dict[str, Any] = {}
        if critical:
            for cls, chosen in (("critical", [k for k in acked if k in critical]),
                                ("normal", [k for k in acked if k not in critical])):
                xs = [max(arrivals[k].values()) - sent[k] for k in chosen if len(arrivals.get(k, {})) >= n]
                # The writer's own watch event: the floor every write pays (PUT, apply, watch stream, this process).
                own = [arrivals[k][writer_of[k]] - sent[k] for k in chosen if writer_of[k] in arrivals.get(k, {})]
                by_class[cls] = {"writes": len(chosen), "complete": len(xs),
                                 "writer_median_ms": r3(1000 * statistics.median(own)) if own else None,
                                 "t100_median_ms": r3(1000 * statistics.median(xs)) if xs else None,
                                 "t100_p99_ms": r3(1000 * (pct(xs, 99) or 0)) if xs else None,
                                 "t100_ms": [round(1000 * x, 2) for x in xs]}
            c, m = by_class["critical"]["t100_median_ms"], by_class["normal"]["t100_median_ms"]
            by_class["critical_over_normal_median"] = round(c / m, 2) if c is not None and m else None
        cpu_writing = cpu_per_delivery(split0, split_last, len(acked) * (n - 1))
        cpus = agent_cpus()
        spread = cpu_spread_per_write(cpu_writing["per_delivery_ms"], n, cpus)
        if by_class:  # each class's t100 median in units of that CPU-bound scale
            by_class["cpu_spread_per_write_ms"] = spread
            for cls in ("critical", "normal"):
                med = by_class[cls]["t100_median_ms"]
                by_class[cls]["t100_over_cpu_spread"] = round(med / spread, 2) if med is not None and spread else None
        each = [t - sent[k] for k in acked for who, t in arrivals.get(k, {}).items() if who != writer_of[k]]
        window = t_end - t_start
        write_window = t_last - t_start
        whole = nft_delta(c0, c_end)
        during = nft_delta(c0, c_last)
        floor = (n - 1) * (len(keys[0]) + sc.size + VERSION_BYTES)
        cpu = [100.0 * (b - a) / bc.CLK_TCK / window for a, b in zip(ticks0, ticks_end, strict=True)
               if a is not None and b is not None]
        cpu_w = [100.0 * (b - a) / bc.CLK_TCK / write_window for a, b in zip(ticks0, ticks_last, strict=True)
                 if a is not None and b is not None]
        incarnations = [m.get("gossip_incarnation", 0.0) for m in m1]
        out: dict[str, Any] = {
            "scenario": asdict(sc), "title": sc.title(), "join": started, "load_before": load_before,
            "load_after": load_after, "writes_acked": len(acked), "write_errors": dict(errors),
            "schedule_lag_ms_p99": r3(1000 * (pct(lags, 99) or 0.0)),
            "schedule_lag_ms_median": r3(1000 * (pct(lags, 50) or 0.0)),
            "schedule_lag_ms": [round(1000 * x, 2) for x in lags],
            # The measuring apparatus itself: which one, and its own CPU-seconds (this driver, the watch readers,
            # the capture child) while writing and over the whole window.
            "apparatus": {"kind": args.apparatus, "observer": args.observer, "observer_priority": prio,
                          "watch_readers": len(reader_pids),
                          "watch_batch_ms": args.watch_batch_ms if lean else None,
                          "capture_sample_every": sample_every if captured else None,
                          "cpu_s_during_writes": obs_delta(obs0, obs_last), "cpu_s_window": obs_delta(obs0, obs_end)},
            "write_window_s": r3(write_window), "window_s": r3(window),
            "latency": {"t100_median_ms": r3(1000 * statistics.median(t100)) if t100 else None,
                        "t100_p99_ms": r3(1000 * (pct(t100, 99) or 0)) if t100 else None,
                        "t100_max_ms": r3(1000 * max(t100)) if t100 else None,
                        "each_median_ms": r3(1000 * statistics.median(each)) if each else None,
                        **first_second_split(t100_of, sent),
                        "complete": len(t100), "incomplete": len(acked) - len(t100),
                        "tail_last_agents": tail_agents(arrivals, t100_of),
                        "t100_ms": [round(1000 * x, 2) for x in t100]},
            "state_out_per_agent": per_agent_spread(
                [labelled(b, "gossip_messages_total", "type", 'direction="out"').get("state", 0.0)
                 - labelled(a, "gossip_messages_total", "type", 'direction="out"').get("state", 0.0)
                 for a, b in zip(m0, m1, strict=True)]),
            "latency_by_class": by_class,
            "roots_equal_after_last_write_s": r3(roots_equal), "distinct_roots_max": distinct_max,
            "rumors_queued": {"after_tail": queued_at_tail, "at_end": queued},
            "floor_bytes_per_write": floor,
            "cpu_pct_per_agent": {"mean": r3(statistics.fmean(cpu)) if cpu else None,
                                  "max": r3(max(cpu)) if cpu else None,
                                  "mean_during_writes": r3(statistics.fmean(cpu_w)) if cpu_w else None},
            "cpu_spread_per_write_ms": spread, "agent_cpus": cpus,
            "cpu_s_per_delivery": {"during_writes": cpu_writing,
                                   "window": cpu_per_delivery(split0, split_end, len(acked) * (n - 1))},
            "incarnation": {"max": max(incarnations, default=0), "mean": r3(statistics.fmean(incarnations))},
            "agent_counters": {
                "messages_out_by_type": sum_deltas(m0, m1, "gossip_messages_total", "type", 'direction="out"'),
                "bytes_out_by_kind": sum_deltas(m0, m1, "gossip_bytes_total", "kind", 'direction="out"'),
                "bytes_in_by_kind": sum_deltas(m0, m1, "gossip_bytes_total", "kind", 'direction="in"'),
                "dropped": sum_deltas(m0, m1, "gossip_packets_dropped_total", "reason"),
                "state_rumors": sum_deltas(m0, m1, "gossip_state_rumors_total", "result"),
                "antientropy_bytes": sum_deltas(m0, m1, "gossip_antientropy_bytes_total", "direction"),
                "antientropy_keys": sum_deltas(m0, m1, "gossip_antientropy_keys_repaired_total", "side"),
                "antientropy_sessions": {k: sum(a.get(f"gossip_antientropy_{k}_total", 0.0)
                                                - b.get(f"gossip_antientropy_{k}_total", 0.0)
                                                for b, a in zip(m0, m1, strict=True))
                                         for k in ("sessions", "rounds", "deferred", "failures", "continued")},
                "rumor_bytes_by_class": sum_deltas(m0, m1, "gossip_rumor_bytes_total", "class"),
                "budget_deferred_by_class": sum_deltas(m0, m1, "gossip_budget_deferred_total", "class"),
                "budget_dropped_by_class": sum_deltas(m0, m1, "gossip_budget_dropped_total", "class"),
                "node_events": sum_deltas(m0, m1, "gossip_node_events_total", "event"),
                # Tree deliveries by path (eager push, answer to our graft, a critical write's direct copy,
                # other: pull answers and floods) and the tree's grafts and prunes (Node stats).
                "tree": {k.removeprefix("tree_"): v for k, v in sum_deltas(
                    m0, m1, "gossip_node_events_total", "event").items()
                    if k.startswith(("tree_delivered_", "tree_grafts", "tree_prunes", "tree_duplicates",
                                     "tree_flood"))},
            },
            "out_Bps_per_agent": out_rates(m0, m1, window),
            "out_Bps_per_agent_during_writes": out_rates(m0, m_last, write_window) if sc.budget else None,
            "nft_whole": whole, "nft_during_writes": during, "capture": capture,
            # Overload shows in membership too: suspicions (and deaths) of agents nobody stopped, from their logs.
            "membership_under_load": bc.false_positives(self.cluster, wall_start),
        }
        out.update(byte_figures(out, len(acked), n, write_window))
        return out


def out_rates(before: list[dict[str, float]], after: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """Each agent's outgoing UDP gossip bytes/s (its own counter, `gossip_bytes_total{direction="out"}` of the
    message-type kinds: payloads without IP/UDP headers; stream bodies such as anti-entropy are not under the
    budget and not counted) over `seconds`: mean and max over the agents (what `gossip.maxBytesPerSecond`
    bounds)."""
    udp = set(TYPE_NAMES.values())
    rates = [sum(v for k, v in sum_deltas([b], [a], "gossip_bytes_total", "kind", 'direction="out"').items()
                 if k in udp) / seconds
             for b, a in zip(before, after, strict=True)] if seconds > 0 else []
    return {"mean": round(statistics.fmean(rates)) if rates else None, "max": round(max(rates)) if rates else None}


def idle_traffic(cl: bc.Cluster, n: int, seconds: float) -> dict[str, Any] | None:
    """Agent-to-agent bytes/s per agent with no writes, over `seconds` after the settle (same nft counters)."""
    if seconds <= 0:
        return None
    lo, hi = cl.port_range
    with AgentNft(lo, hi) as nft:
        c0 = nft.read()
        t0 = time.monotonic()
        time.sleep(seconds)
        d = nft_delta(c0, nft.read())
        secs = time.monotonic() - t0
    if d is None:
        return None
    return {"seconds": round(secs, 1), "Bps_per_agent": round(d["bytes"] / n / secs, 1),
            "udp_pps_per_agent": round(d["udp_packets"] / n / secs, 2)}


def byte_figures(r: dict[str, Any], writes: int, n: int, write_window: float) -> dict[str, Any]:
    """Bytes per write, x floor, the breakdown by type (UDP by capture, TCP by the agents' counters) and shares."""
    whole, during = r.get("nft_whole"), r.get("nft_during_writes")
    out: dict[str, Any] = {}
    if not whole or not writes:
        return out
    per_write = whole["bytes"] / writes
    out["bytes_per_write"] = round(per_write)
    out["x_floor"] = round(per_write / r["floor_bytes_per_write"], 2)
    if during and write_window > 0:
        out["kBps_during_writes"] = round(during["bytes"] / write_window / 1000, 2)
    by_type: dict[str, float] = {}
    cap = r.get("capture")
    counts = r.get("agent_counters", {}).get("messages_out_by_type", {})
    if cap and cap.get("wire_bytes"):
        weights = dict(cap["wire_bytes_by_type"])
        out["udp_split"] = "capture"
        captured = cap.get("messages") or {}
        if counts and captured:
            # The agents count every message they send (exact even when the capture could not keep up); the
            # capture gives each type's mean wire size (headers shared), which sampling does not bias. A type
            # the capture never kept (rare: a nack, a suspicion) gets the mean size of all captured messages.
            overall = sum(cap["wire_bytes_by_type"].values()) / max(1, sum(captured.values()))
            weights = {t: c * (cap["wire_bytes_by_type"][t] / captured[t] if captured.get(t) else overall)
                       for t, c in counts.items() if c > 0}
            out["udp_split"] = "agent message counts x captured mean wire size"
        if cap.get("undecoded_bytes"):
            if out["udp_split"] == "capture":  # captured bytes beside captured bytes: the same sample
                weights["udp_undecoded"] = cap["undecoded_bytes"]
            else:  # beside whole counts: undecoded datagrams' share of the captured wire bytes
                share = min(0.99, cap["undecoded_bytes"] / cap["wire_bytes"])
                weights["udp_undecoded"] = sum(weights.values()) * share / (1 - share)
        scale = whole["udp_bytes"] / (sum(weights.values()) or 1.0)
        for k, v in weights.items():
            by_type[k] = v * scale
        # Of the datagrams the capture asked the kernel for (1 in `sample_every`), those it decoded; the kernel
        # drops the rest while the capture is busy.
        sample = cap.get("sample_every") or 1
        out["capture_kept"] = round(cap["packets"] * sample / max(1, whole["udp_packets"]), 3)
    elif whole["udp_bytes"]:
        by_type["udp (not decoded)"] = whole["udp_bytes"]
    # TCP: push-pull bodies are counted by the serving agent (in + out), anti-entropy by the initiator (sent +
    # received); HTTP headers, handshakes and other stream operations are shared in the same proportion.
    counters = r.get("agent_counters", {})
    tcp_parts = {"pushpull": counters.get("bytes_out_by_kind", {}).get("pushpull", 0.0)
                 + counters.get("bytes_in_by_kind", {}).get("pushpull", 0.0),
                 "antientropy": sum(counters.get("antientropy_bytes", {}).values())}
    tcp_total = sum(tcp_parts.values())
    if whole["tcp_bytes"]:
        if tcp_total > 0:
            for k, v in tcp_parts.items():
                if v:
                    by_type[f"tcp:{k}"] = whole["tcp_bytes"] * v / tcp_total
        else:
            by_type["tcp:other"] = whole["tcp_bytes"]
    out["bytes_by_type"] = {k: round(v) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])}
    total = sum(by_type.values()) or 1.0
    member = sum(v for k, v in by_type.items() if k in MEMBERSHIP_TYPES or
                 (k.startswith("tcp:") and any(op in k for op in MEMBERSHIP_OPS)))
    out["membership_share"] = round(member / total, 3)
    out["alive_share"] = round(by_type.get("alive", 0.0) / total, 3)
    return out


# -- Serf --------------------------------------------------------------------------------------------------------
_SERF_USER_RE = re.compile(r"Received event: user-event: (\S+)")


def parse_serf_load(line: str) -> bc.Parsed | None:
    m = _SERF_USER_RE.search(line)
    if m:
        return ("user", m.group(1), None)
    return bc.parse_serf(line)


class SerfLoad(bc.Serf):
    parse = staticmethod(parse_serf_load)


class SerfRpc:
    """Serf's msgpack RPC (handshake, then `event`), enough to send user events from this process."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((AGENT_ADDR, port), timeout=10)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.seq = 0
        self.call("handshake", {"Version": 1})

    def call(self, command: str, body: dict[str, Any]) -> None:
        self.sock.sendall(msgpack.packb({"Command": command, "Seq": self.seq}) + msgpack.packb(body))
        self.seq += 1
        while True:
            for header in self.unpacker:
                if header.get("Error"):
                    raise RuntimeError(f"serf rpc {command}: {header['Error']}")
                return
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("serf rpc: connection closed")
            self.unpacker.feed(chunk)

    def close(self) -> None:
        self.sock.close()


def run_serf(sc: Scenario, args: argparse.Namespace, workdir: Path, ports: bc.Ports, hub: bc.LogHub) -> dict[str, Any]:
    cl = bc.Cluster(SerfLoad(), hub, workdir, ports, sc.n)
    started = bc.start_cluster(cl, sc.n, batch=20 if sc.n > 60 else 0, timeout=args.join_timeout)
    if not started.get("converged"):
        cl.stop_all()
        raise RuntimeError(f"{sc.title()}: the Serf cluster did not converge")
    agents = cl.live()
    rng = random.Random(args.seed)
    rpcs: dict[str, SerfRpc] = {}
    lo, hi = cl.port_range
    tag = f"e{time.monotonic_ns() % 10**9}"
    names = [f"{tag}-{i}" for i in range(sc.writes)]
    payload_size = sc.size
    sent: dict[str, float] = {}
    errors: Counter[str] = Counter()
    try:
        time.sleep(args.settle)
        idle = idle_traffic(cl, len(agents), args.idle_seconds)
        load_before = bc.loadavg()
        with AgentNft(lo, hi) as nft:
            ticks0 = [bc.cpu_ticks(a.pid) for a in agents]
            c0 = nft.read()
            t_start = time.perf_counter()
            for i, name in enumerate(names):
                due = t_start + i / sc.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                a = agents[rng.randrange(len(agents))]
                try:
                    rpc = rpcs.get(a.name) or rpcs.setdefault(a.name, SerfRpc(a.rpc_port))
                    sent[name] = time.time()
                    rpc.call("event", {"Name": name, "Payload": os.urandom(payload_size), "Coalesce": False})
                except (OSError, RuntimeError) as exc:
                    errors[str(exc)[:80]] += 1
                    sent.pop(name, None)
            t_last = time.perf_counter()
            c_last = nft.read()
            n = len(agents)
            bc.wait_until(lambda: all(all(cl.hub.get(a.name, "user", k) for a in agents) for k in sent),
                          args.deliver_timeout, poll=0.05)
            rest = t_last + args.tail - time.perf_counter()
            if rest > 0:
                time.sleep(rest)
            t_end = time.perf_counter()
            c_end = nft.read()
            ticks_end = [bc.cpu_ticks(a.pid) for a in agents]
        load_after = bc.loadavg()
    finally:
        for rpc in rpcs.values():
            rpc.close()
        cl.stop_all()
    t100_of: dict[str, float] = {}
    each: list[float] = []
    for k, t0 in sent.items():
        evs = [cl.hub.get(a.name, "user", k) for a in agents]
        got = [e.t - t0 for e in evs if e]
        each.extend(got)
        if len(got) == n:
            t100_of[k] = max(got)
    t100 = list(t100_of.values())
    window = t_end - t_start
    write_window = t_last - t_start
    cpu = [100.0 * (b - a) / bc.CLK_TCK / window for a, b in zip(ticks0, ticks_end, strict=True)
           if a is not None and b is not None]
    floor = (n - 1) * (len(names[0]) + sc.size + VERSION_BYTES)
    whole, during = nft_delta(c0, c_end), nft_delta(c0, c_last)
    out: dict[str, Any] = {
        "scenario": asdict(sc), "title": sc.title(), "join": started, "load_before": load_before,
        "load_after": load_after, "writes_acked": len(sent), "write_errors": dict(errors),
        "write_window_s": r3(write_window), "window_s": r3(window),
        "latency": {"t100_median_ms": r3(1000 * statistics.median(t100)) if t100 else None,
                    "t100_p99_ms": r3(1000 * (pct(t100, 99) or 0)) if t100 else None,
                    "t100_max_ms": r3(1000 * max(t100)) if t100 else None,
                    "each_median_ms": r3(1000 * statistics.median(each)) if each else None,
                    **first_second_split(t100_of, sent),
                    "complete": len(t100), "incomplete": len(sent) - len(t100),
                    "t100_ms": [round(1000 * x, 2) for x in t100]},
        "floor_bytes_per_write": floor, "idle": idle,
        "cpu_pct_per_agent": {"mean": r3(statistics.fmean(cpu)) if cpu else None, "max": r3(max(cpu)) if cpu else None},
        "nft_whole": whole, "nft_during_writes": during,
    }
    if whole and sent:
        out["bytes_per_write"] = round(whole["bytes"] / len(sent))
        out["x_floor"] = round(whole["bytes"] / len(sent) / floor, 2)
        out["bytes_by_type"] = {"udp (serf)": whole["udp_bytes"], "tcp (serf push-pull)": whole["tcp_bytes"]}
        if during and write_window > 0:
            out["kBps_during_writes"] = round(during["bytes"] / write_window / 1000, 2)
    return out


# -- the plan ----------------------------------------------------------------------------------------------------
def parse_list(text: str, kind: type) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def broadcast_sets(args: argparse.Namespace) -> list[list[str]]:
    """The config overrides of each run: `--set`s, and with `--broadcasts` one run per gossip.broadcast path
    (before/after of the broadcast tree in one run)."""
    if not args.broadcasts:
        return [list(args.set)]
    return [[*args.set, f"gossip.broadcast={b}"] for b in parse_list(args.broadcasts, str)]


def plan(args: argparse.Namespace) -> list[Scenario]:
    out: list[Scenario] = []
    for n in parse_list(args.n, int):
        for rate in parse_list(args.rate, float):
            writes = args.writes or max(1, round(rate * args.seconds))
            for mode in parse_list(args.modes, str):
                for sets in broadcast_sets(args):
                    out.append(Scenario("ours", n, rate, args.size, writes, mode, sets,
                                        "critical" if args.critical_every else "load", args.critical_every))
                    if args.budget:  # the same run under the byte budget, beside it
                        out.append(Scenario("ours", n, rate, args.size, writes, mode,
                                            [*sets, f"gossip.maxBytesPerSecond={args.budget}"], "budget",
                                            args.critical_every, args.budget))
            if args.serf and args.size + 24 <= SERF_EVENT_LIMIT:
                out.append(Scenario("serf", n, rate, args.size, writes, "-", [], "load"))
    if args.issue_scenario:
        for mode in ("push", "pull", "push-pull"):
            for sets in broadcast_sets(args):
                out.append(Scenario("ours", 8, 10, 200, 80, mode, sets, "issue8"))
        if args.serf:
            out.append(Scenario("serf", 8, 10, 200, 80, "-", [], "issue8"))
    if args.sweep:  # with --broadcasts, once per path (retransmits cost most on the flood)
        for sets in broadcast_sets(args):
            for fanout in (1, 3, 6):
                for mult in (1, 2, 4):
                    out.append(Scenario("ours", 10, 10, args.size, max(1, round(10 * args.seconds)), "push-pull",
                                        [*sets, f"gossip.fanout={fanout}", f"gossip.retransmitMult={mult}"],
                                        "sweep"))
    repeats = getattr(args, "repeat", 1)  # (callers that build their own Namespace may leave it out)
    if repeats > 1:  # each of our runs K times in a row, each on a fresh cluster (Serf's once)
        out = [x for sc in out for x in ([replace(sc, repeat=i, repeats=repeats) for i in range(repeats)]
                                         if sc.impl == "ours" else [sc])]
    baseline = getattr(args, "baseline", None)  # (callers that build their own Namespace may leave it out)
    if baseline:  # each of our runs once more from the baseline tree, just before it
        src = str(Path(baseline).resolve())
        out = [x for sc in out for x in ([replace(sc, src=src), sc] if sc.impl == "ours" else [sc])]
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    with contextlib.suppress(ImportError):
        from gossip_agent import __version__
        out["gossip_agent"] = __version__
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT, timeout=10).stdout.strip()
        if git:
            out["git"] = git + (" (with uncommitted changes)" if dirty else "")
    if serf_mod.available():
        out["serf"] = serf_mod.version()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="10", help="comma list of cluster sizes (default %(default)s)")
    p.add_argument("--rate", default="10", help="comma list of writes/s (default %(default)s)")
    p.add_argument("--size", type=int, default=1024, help="value bytes (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="write for this long (default %(default)s)")
    p.add_argument("--writes", type=int, default=0, help="write count instead of --seconds")
    p.add_argument("--modes", default="push-pull", help="comma list of gossip.mode (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override our agents' config (repeatable)")
    p.add_argument("--broadcasts", default="", metavar="PATHS",
                   help="comma list of gossip.broadcast (tree, flood): one run of each of our scenarios per path")
    p.add_argument("--serf", action="store_true", help="Serf user events beside us (sizes <= 488 B)")
    p.add_argument("--issue-scenario", action="store_true", help="add the 8-agent, 80 x 200 B at 10/s runs")
    p.add_argument("--sweep", action="store_true", help="add N=10 runs over fanout x retransmitMult")
    p.add_argument("--critical-every", type=int, default=0, metavar="K",
                   help="every K-th write is PUT with ?priority=critical; t100 is then also reported per class")
    p.add_argument("--budget", type=int, default=0, metavar="BYTES",
                   help="also run each scenario with gossip.maxBytesPerSecond=BYTES (per-agent bytes/s reported)")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run each of our scenarios with the agents from DIR (an older commit's agent/, "
                   "e.g. `git archive REV agent | tar -x -C /tmp/base`): before/after in one invocation")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="run each of our scenarios K times in a row, each on a fresh cluster (rows carry `repeat` "
                   "0..K-1; Serf rows are not repeated; with --baseline each repeat is a before/after pair) "
                   "(default %(default)s)")
    p.add_argument("--no-default", action="store_true", help="only --issue-scenario / --sweep runs")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between join and the first write")
    p.add_argument("--idle-seconds", type=float, default=5.0,
                   help="after the settle, measure idle bytes/s per agent this long (0: skip)")
    p.add_argument("--tail", type=float, default=3.0, help="seconds counted after the last write's ack")
    p.add_argument("--drain-timeout", type=float, default=20.0,
                   help="after the tail, wait this long at most for every rumor queue to empty")
    p.add_argument("--deliver-timeout", type=float, default=15.0)
    p.add_argument("--converge-timeout", type=float, default=30.0)
    p.add_argument("--join-timeout", type=float, default=120.0)
    p.add_argument("--base-port", type=int, default=23000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON here")
    p.add_argument("--keep-logs", metavar="DIR")
    p.add_argument("--cpu-profile", metavar="DIR",
                   help="attribute each agent's CPU (event-loop callbacks, selector, gc, hot functions; "
                   "bench/cpu_profile/) into DIR/<scenario number>-<title>/; summarise one with "
                   "`python bench/cpu_profile/report.py DIR/...`")
    p.add_argument("--apparatus", choices=("lean", "classic"), default="lean",
                   help="the measuring apparatus: lean (watch streams in reader children, raw PUTs stamped at the "
                   "send, sampled capture, observer priority) or classic (everything in this process, aiohttp, "
                   "every datagram captured, default priority): to A/B the apparatus itself (default %(default)s)")
    p.add_argument("--observer", choices=("trace", "watch"), default="trace",
                   help="how deliveries are seen: trace (each agent stamps its applies itself, "
                   "bench/apply_trace/; no watch streams) or watch (a watch stream per agent, read by the "
                   "apparatus: costs the agents a watch line per delivery) (default %(default)s)")
    p.add_argument("--watch-readers", type=int, default=1, metavar="R",
                   help="lean: watch reader child processes (default %(default)s)")
    p.add_argument("--observer-priority", default=OBSERVER_PRIORITY, metavar="rt|NICE",
                   help="lean: the observer's priority (driver loop while measuring, readers, capture; the agents "
                   "keep the default): rt (SCHED_RR 1) or a nice value; needs root; 0: unchanged "
                   "(default %(default)s)")
    p.add_argument("--watch-batch-ms", type=float, default=WATCH_BATCH_MS, metavar="MS",
                   help="lean: a watch reader lets lines gather this long after each wake-up (stamps at most "
                   "that late; 0: read at every wake-up) (default %(default)s)")
    p.add_argument("--capture-sample", type=int, default=0, metavar="K",
                   help=f"lean: capture 1 in K datagrams (0: K for about {CAPTURE_TARGET_PPS} kept/s)")
    p.add_argument("--capture-child", help=argparse.SUPPRESS)
    p.add_argument("--watch-reader", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat: at least 1")
    if args.capture_child:
        lo, hi, rest = args.capture_child.split(",", 2)
        out, sample, prio = rest.rsplit(",", 2)
        return capture_child(int(lo), int(hi), out, int(sample), prio)
    if args.watch_reader:
        prio, batch_ms, spec = args.watch_reader.split("/", 2)
        return watch_reader_child(spec, prio, float(batch_ms) / 1000)
    if args.serf and not serf_mod.available():
        log("serf is not installed (apt-get install serf): no Serf rows")
        args.serf = False
    scenarios = plan(args)
    if args.no_default:
        scenarios = [s for s in scenarios if s.label != "load"]
    signal.signal(signal.SIGTERM, bc._on_term)
    workdir = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="bench-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.platform()}",
            "load_start": bc.loadavg(), "versions": versions(), "argv": sys.argv[1:]}
    hub = bc.LogHub()
    ports = bc.Ports(args.base_port)
    results: list[dict[str, Any]] = []
    try:
        # The agents we start (children) load bench/apply_trace/sitecustomize.py (which loads the CPU profile
        # hook too when asked for) or bench/cpu_profile/sitecustomize.py.
        hook_dir = APPLY_TRACE_HOOK if args.observer == "trace" else CPU_PROFILE_HOOK if args.cpu_profile else None
        if hook_dir:
            os.environ["PYTHONPATH"] = os.pathsep.join(
                part for part in (hook_dir, os.environ.get("PYTHONPATH")) if part)
        for i, sc in enumerate(scenarios):
            log(f"== {sc.title()} (load {bc.loadavg()})")
            if args.observer == "trace":
                os.environ[APPLY_TRACE_ENV] = tempfile.mkdtemp(prefix=f"trace-{i:02d}-", dir=workdir)
            if args.cpu_profile:
                slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", sc.title()).strip("_")
                os.environ[CPU_PROFILE_ENV] = str(Path(args.cpu_profile).resolve() / f"{i:02d}-{slug}")
            try:
                if sc.impl == "serf":
                    r = run_serf(sc, args, workdir, ports, hub)
                else:
                    r = asyncio.run(OursLoad(sc, args, workdir, ports, hub).run())
            except RuntimeError as exc:
                log(f"{sc.title()}: failed: {exc}")
                r = {"scenario": asdict(sc), "title": sc.title(), "error": str(exc)}
            results.append(r)
            print(row_text(r), flush=True)
            if args.json:  # after every scenario: a long plan that dies keeps what it measured
                Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    finally:
        hub.close()
        bc._cleanup_all()
    meta["load_end"] = bc.loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0 if all("error" not in r for r in results) else 1


def row_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['title']}: ERROR {r['error']}"
    lat = r["latency"]
    parts = [r["title"], f"acked {r['writes_acked']}",
             f"t100 median {lat['t100_median_ms']} ms p99 {lat['t100_p99_ms']} ms (incomplete {lat['incomplete']}; "
             f"first second median {lat.get('first_s_t100_median_ms')} ms, p99 after it "
             f"{lat.get('t100_p99_after_first_s_ms')} ms)"]
    if lat.get("tail_last_agents"):
        parts.append(f"last at the slowest 1 %: {lat['tail_last_agents']}")
    if r.get("state_out_per_agent"):
        spread = r["state_out_per_agent"]
        parts.append(f"state messages out per agent max {spread['max']} mean {spread['mean']} "
                     f"({spread['near_zero']} forward none)")
    if r.get("latency_by_class"):
        c = r["latency_by_class"]
        parts.append(f"critical t100 median {c['critical']['t100_median_ms']} ms vs normal "
                     f"{c['normal']['t100_median_ms']} ms ({c['critical_over_normal_median']}x; at the writer "
                     f"{c['critical'].get('writer_median_ms')} / {c['normal'].get('writer_median_ms')} ms; "
                     f"one write's CPU over every core {c.get('cpu_spread_per_write_ms')} ms)")
    if "bytes_per_write" in r:
        parts.append(f"{r['bytes_per_write']} B/write = {r['x_floor']}x floor")
    if "kBps_during_writes" in r:
        parts.append(f"{r['kBps_during_writes']} kB/s")
    if r.get("scenario", {}).get("budget") and r.get("out_Bps_per_agent"):
        rates, counters = r["out_Bps_per_agent"], r.get("agent_counters", {})
        writing = r.get("out_Bps_per_agent_during_writes") or {}
        parts.append(f"per agent out {writing.get('mean')} B/s mean, {writing.get('max')} max while writing, "
                     f"{rates['mean']} / {rates['max']} over the window (budget "
                     f"{r['scenario']['budget']}); deferred {counters.get('budget_deferred_by_class', {})}, "
                     f"dropped {counters.get('budget_dropped_by_class', {})}")
    if r.get("cpu_s_per_delivery"):
        c = r["cpu_s_per_delivery"]
        parts.append(f"CPU {c['during_writes']['per_delivery_ms']} ms/delivery while writing, "
                     f"{c['window']['per_delivery_ms']} over the window (stime {c['window']['stime_share']})")
    app = r.get("apparatus")
    if app:
        cpu = app.get("cpu_s_during_writes") or {}
        parts.append(f"observer ({app.get('observer', 'watch')}, {app['kind']}, priority "
                     f"{app.get('observer_priority')}, capture 1/"
                     f"{app.get('capture_sample_every')}): lag p99 {r.get('schedule_lag_ms_p99')} ms, CPU-s while "
                     f"writing driver {cpu.get('driver')} readers {cpu.get('readers')} capture {cpu.get('capture')}")
    if "membership_share" in r:
        parts.append(f"membership/convergence {100 * r['membership_share']:.0f}%")
    if r.get("roots_equal_after_last_write_s") is not None:
        parts.append(f"roots equal +{r['roots_equal_after_last_write_s']} s")
    tree = r.get("agent_counters", {}).get("tree")
    if tree:
        parts.append("tree " + ", ".join(f"{k.removeprefix('delivered_')} {v:g}" for k, v in sorted(tree.items())))
    if r.get("bytes_by_type"):
        parts.append("by type " + ", ".join(f"{k} {v}" for k, v in list(r["bytes_by_type"].items())[:6]))
    if r.get("idle"):
        parts.append(f"idle {r['idle']['Bps_per_agent']} B/s per agent")
    parts.append(f"load {r['load_before']}->{r['load_after']}")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
