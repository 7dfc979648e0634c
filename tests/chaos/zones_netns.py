"""Agent hosts in zones: network namespaces in groups, with a real delay between groups (needs root).

Layout (built on netns.Testbed: same naming, stale clean-up, processes stopped by PID):

    h0 .. h(k-1)  10.214.0.10+i/24 ─┐                ┌─ 10.214.1.10+i/24  hk ..
                                     br0 ─ router ns ─ br1                 ...      (one bridge per group)
                    10.214.0.1/24 ───┘   (forwards)  └─── 10.214.1.1/24

Each host has one route, 10.214.0.0/16 via its group's router address: no default route, nothing reaches or
leaves the namespaces we created. Traffic inside a group is bridged; traffic between groups is routed by the
router namespace (ip_forward is switched on in that namespace only, which we own: no kernel setting of the
machine changes), where an nftables table counts it per ordered pair of groups and sends it to an NFQUEUE
held by `nfq_delay.py` (no `tc netem` here, TESTBED.md) for the pair's one-way delay. The round trip between
two groups is therefore the two one-way delays plus a fraction of a millisecond. Traffic inside a group is
counted by a bridge-family table in the router namespace.

The test process talks to agents from threads that joined a namespace (`in_ns_thread`): to a host's own agent from
the host's namespace, and to any agent from the router namespace (local to the router: its traffic is neither
delayed nor counted). `icmp_rtts` pings with a raw ICMP socket (no `ping` binary needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from gossip_agent.core import codec
from tests.chaos.netns import (
    AGENT_PORT,
    AgentNet,
    AgentProc,
    Host,
    NetnsError,
    Proc,
    Testbed,
    in_ns_thread,
    remove_stale,
    run,
    wait_until,
)
from tests.chaos.netns import in_ns as ns_exec

T = TypeVar("T")
ZONE_NET = "10.214"
ROUTER_HOST = 1
FIRST_HOST = 10
MAX_GROUPS = 8
QUEUE_BASE = 100
DELAYER = Path(__file__).resolve().parent / "nfq_delay.py"


def delayer_problem() -> str | None:
    """Why the NFQUEUE delayer cannot run here, or None."""
    try:
        import netfilterqueue  # noqa: F401
    except ImportError as exc:
        return (f"the NFQUEUE delayer needs PyPI netfilterqueue ({exc}); scripts/setup --dev installs it when "
                "Debian's libnetfilter-queue-dev is present")
    return None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_rtts(ns: str, dest: str, count: int = 20, interval: float = 0.05, timeout: float = 2.0) -> list[float]:
    """Round-trip times (seconds) of `count` ICMP echoes from namespace `ns` to `dest`; lost ones left out."""
    if not 1 <= count <= 1000:
        raise ValueError("count must be 1..1000")

    def ping() -> list[float]:
        ident = os.getpid() & 0xFFFF
        out: list[float] = []
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            s.settimeout(timeout)
            for seq in range(count):
                header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                payload = b"gossip-zones-ping"
                packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
                sent = time.perf_counter()
                s.sendto(packet, (dest, 0))
                deadline = sent + timeout
                while time.perf_counter() < deadline:
                    try:
                        data, addr = s.recvfrom(2048)
                    except TimeoutError:
                        break
                    ihl = (data[0] & 0x0F) * 4
                    kind, _, _, r_ident, r_seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                    if addr[0] == dest and kind == 0 and r_ident == ident and r_seq == seq:
                        out.append(time.perf_counter() - sent)
                        break
                time.sleep(interval)
        return out

    return in_ns_thread(ns, ping)


@dataclass(frozen=True)
class ZoneLayout:
    """How many hosts each group has and the one-way delay (ms) from group a to group b (a != b)."""

    sizes: tuple[int, ...]
    one_way_ms: Mapping[tuple[int, int], float]

    @staticmethod
    def symmetric(sizes: Sequence[int], rtt_ms: Mapping[tuple[int, int], float]) -> ZoneLayout:
        """Round trips per unordered pair of groups, split evenly between the two directions."""
        one_way: dict[tuple[int, int], float] = {}
        for (a, b), rtt in rtt_ms.items():
            one_way[(a, b)] = one_way[(b, a)] = rtt / 2.0
        return ZoneLayout(tuple(sizes), one_way)

    def rtt_ms(self, a: int, b: int) -> float:
        return 0.0 if a == b else self.one_way_ms.get((a, b), 0.0) + self.one_way_ms.get((b, a), 0.0)


def zone_name(group: int) -> str:
    return f"zone-{chr(ord('a') + group)}"


class ZonedTestbed(Testbed):
    """Hosts in groups behind a router namespace that delays and counts the traffic between groups."""

    __test__ = False

    def __init__(self, layout: ZoneLayout, workdir: Path, *, python: str = sys.executable) -> None:
        if not 1 <= len(layout.sizes) <= MAX_GROUPS or any(s < 1 for s in layout.sizes):
            raise ValueError(f"1..{MAX_GROUPS} groups of at least one host")
        super().__init__(sum(layout.sizes), workdir)
        self.layout = layout
        self.python = python
        self.group_of: list[int] = []
        hosts: list[Host] = []
        for g, size in enumerate(layout.sizes):
            for i in range(size):
                index = len(hosts)
                hosts.append(Host(index, f"{self.run_name}-h{index}", f"{ZONE_NET}.{g}.{FIRST_HOST + i}",
                                  port=f"p{index}"))
                self.group_of.append(g)
        self.hosts = hosts
        self.delayer: Proc | None = None

    @property
    def router_ns(self) -> str:
        return self.bridge_ns

    def groups(self) -> list[list[Host]]:
        out: list[list[Host]] = [[] for _ in self.layout.sizes]
        for h in self.hosts:
            out[self.group_of[h.index]].append(h)
        return out

    def zone_of(self, host: Host) -> str:
        return zone_name(self.group_of[host.index])

    def _queue(self, a: int, b: int) -> int:
        return QUEUE_BASE + a * MAX_GROUPS + b

    def setup(self) -> None:
        remove_stale()
        try:
            r = self.router_ns
            self._add_ns(r)
            run(["ip", "-n", r, "link", "set", "lo", "up"])
            ns_exec(r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])  # this namespace's own setting
            for g in range(len(self.layout.sizes)):
                run(["ip", "-n", r, "link", "add", f"br{g}", "type", "bridge"])
                run(["ip", "-n", r, "addr", "add", f"{ZONE_NET}.{g}.{ROUTER_HOST}/24", "dev", f"br{g}"])
                run(["ip", "-n", r, "link", "set", f"br{g}", "up"])
            for h in self.hosts:
                g = self.group_of[h.index]
                self._add_ns(h.ns)
                run(["ip", "-n", r, "link", "add", h.port, "type", "veth", "peer", "name", h.iface, "netns", h.ns])
                run(["ip", "-n", r, "link", "set", h.port, "master", f"br{g}"])
                run(["ip", "-n", r, "link", "set", h.port, "up"])
                run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
                run(["ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", h.iface])
                run(["ip", "-n", h.ns, "link", "set", h.iface, "up"])
                run(["ip", "-n", h.ns, "route", "add", f"{ZONE_NET}.0.0/16", "via", f"{ZONE_NET}.{g}.{ROUTER_HOST}"])
            self._install_rules()
            self._start_delayer()
        except BaseException:
            self.close()
            raise

    def _install_rules(self) -> None:
        """Counters: an nftables table per family (routed pairs in `inet`, bridged traffic inside a group in
        `bridge`), at a priority before the delay. The delay: iptables NFQUEUE rules (this kernel lacks nft's
        native `queue` expression; iptables-nft reaches the same queues through the xtables target)."""
        n = len(self.layout.sizes)
        protos = (("udp", "meta l4proto udp"), ("tcp", "meta l4proto tcp"), ("other", "meta l4proto != { udp, tcp }"))
        routed = [f"ip saddr {ZONE_NET}.{a}.0/24 ip daddr {ZONE_NET}.{b}.0/24 {match} counter comment \"z{a}-{b}-{p}\""
                  for a in range(n) for b in range(n) if a != b for p, match in protos]
        bridged = [f"ip saddr {ZONE_NET}.{g}.0/24 ip daddr {ZONE_NET}.{g}.0/24 {match} counter comment \"z{g}-{g}-{p}\""
                   for g in range(n) for p, match in protos]
        nl = "\n    "
        script = (f"table inet gsp_zones {{\n  chain forward {{ type filter hook forward priority -10; "
                  f"policy accept;\n    {nl.join(routed)}\n  }}\n}}\n"
                  f"table bridge gsp_zones_l2 {{\n  chain forward {{ type filter hook forward priority -10; "
                  f"policy accept;\n    {nl.join(bridged)}\n  }}\n}}\n")
        ns_exec(self.router_ns, ["nft", "-f", "-"], input=script)
        for (a, b), ms in sorted(self.layout.one_way_ms.items()):
            if ms > 0:
                ns_exec(self.router_ns, ["iptables", "-w", "-A", "FORWARD", "-s", f"{ZONE_NET}.{a}.0/24",
                                         "-d", f"{ZONE_NET}.{b}.0/24", "-j", "NFQUEUE", "--queue-num",
                                         str(self._queue(a, b))])

    def _start_delayer(self) -> None:
        specs = [f"{self._queue(a, b)}:{ms:g}" for (a, b), ms in sorted(self.layout.one_way_ms.items()) if ms > 0]
        if not specs:
            return
        argv = [self.python, str(DELAYER), "--max-seconds", "7200"]
        for spec in specs:
            argv += ["--queue", spec]
        router = Host(-1, self.router_ns, f"{ZONE_NET}.0.{ROUTER_HOST}")
        self.delayer = self.spawn(router, argv, log_name="nfq-delay")
        delayer = self.delayer
        wait_until(lambda: "ready" in delayer.log_tail() or not delayer.alive(), 20.0, "the delayer to bind")
        if not delayer.alive():
            raise NetnsError(f"the NFQUEUE delayer exited: {delayer.log_tail()}")

    def pair_bytes_by_proto(self) -> dict[tuple[int, int, str], int]:
        """Bytes counted so far per ordered pair of groups and protocol ("udp", "tcp", "other"); (a, a, p):
        inside group a (bridged)."""
        out: dict[tuple[int, int, str], int] = {}
        for family, table in (("inet", "gsp_zones"), ("bridge", "gsp_zones_l2")):
            text = ns_exec(self.router_ns, ["nft", "-j", "list", "table", family, table]).stdout
            for item in json.loads(text).get("nftables", []):
                rule = item.get("rule")
                if not rule or not str(rule.get("comment", "")).startswith("z"):
                    continue
                a, b, proto = str(rule["comment"])[1:].split("-")
                for expr in rule.get("expr", []):
                    if "counter" in expr:
                        out[(int(a), int(b), proto)] = int(expr["counter"]["bytes"])
        return out

    def pair_bytes(self) -> dict[tuple[int, int], int]:
        """Bytes counted so far per ordered pair of groups, all protocols; (a, a): inside group a (bridged)."""
        out: dict[tuple[int, int], int] = {}
        for (a, b, _), value in self.pair_bytes_by_proto().items():
            out[(a, b)] = out.get((a, b), 0) + value
        return out

    def queue_drops(self) -> int:
        """Packets the kernel dropped because a delay queue was full (should stay 0)."""
        text = ns_exec(self.router_ns, ["cat", "/proc/net/netfilter/nfnetlink_queue"], check=False).stdout
        drops = 0
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 7:
                with contextlib.suppress(ValueError):
                    drops += int(fields[5]) + int(fields[6])
        return drops



class ZonedAgents(AgentNet):
    """Gossip agents on a ZonedTestbed, one per host, each with its own config: the shared `spec` plus what
    `per_group(group)` adds (e.g. `{"topology": {"zone": zone_name(group)}}`). The first host of each group
    seeds the others; agents are named `zone-<x>-<host index>`."""

    def __init__(self, bed: ZonedTestbed, spec: Mapping[str, object], python: str = sys.executable) -> None:
        super().__init__(bed, spec, python)
        self.zbed = bed

    def name_of(self, host: Host) -> str:
        return f"{self.zbed.zone_of(host)}-{host.index}"

    def start_all(self, per_group: Callable[[int], Mapping[str, object]] = lambda g: {}) -> list[AgentProc]:
        seeds = [g[0] for g in self.zbed.groups()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOSSIP_")}
        env["PYTHONUNBUFFERED"] = "1"
        started: list[AgentProc] = []
        for host in self.zbed.hosts:
            group = self.zbed.group_of[host.index]
            spec = _merged(self.spec, per_group(group))
            path = self.bed.workdir / f"agent-{host.index}.yaml"
            path.write_text(yaml.safe_dump(spec))
            name = self.name_of(host)
            argv = [self.python, "-m", "gossip_agent", "--config", str(path), "--name", name,
                    "--bind-address", host.addr, "--port", str(AGENT_PORT), "--log-level", "info"]
            for seed in seeds:
                if seed is not host:
                    argv += ["--seed", f"{seed.addr}:{AGENT_PORT}"]
            agent = AgentProc(name, host, self.bed.spawn(host, argv, env=env, log_name=name))
            self.agents.append(agent)
            started.append(agent)
        return started

    def rtt_ms(self, at: AgentProc, to: AgentProc) -> float | None:
        """`at`'s estimate of the round trip to `to` (GET /v1/rtt at `at`), or None while it has none."""
        body = self.get(at, f"/v1/rtt?to={to.name}")
        if body is None:
            return None
        value = json.loads(body).get("rttMs")
        return float(value) if isinstance(value, int | float) else None


def _merged(base: Mapping[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    out = json.loads(json.dumps(dict(base)))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out  # type: ignore[no-any-return]


class CrossZoneSniffer:
    """What crosses zones, by message type: a packet socket on each group's bridge in the router namespace
    sees every routed (cross-zone) frame as it arrives from its sender's group (bridged traffic inside a group
    never reaches the bridge device). UDP datagrams are decoded with the agent's codec (plaintext agents
    only) and their IP bytes attributed to the packet's kind -- its first message ("ping", "ack", "state"
    for a tree push or a gossip packet of rumors, ...) -- and to each message type inside by its encoded
    size. TCP bytes are attributed to the internal HTTP path of the stream (push-pull, anti-entropy, ...).

    A diagnostic for benches (`counts()` between two calls tells what a phase sent); it reads in a thread of
    its own and stops with `close()`."""

    _ETH_P_IP = 0x0800
    _PACKET_OUTGOING = 4
    _PATH_RX = re.compile(rb"^(?:POST|GET|PUT) (/v1/[A-Za-z0-9/_-]+)")

    def __init__(self, bed: ZonedTestbed) -> None:
        self.bed = bed
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._conn_path: dict[tuple[str, int, str, int], str] = {}
        self._stop = threading.Event()
        groups = len(bed.layout.sizes)

        def open_sockets() -> list[socket.socket]:
            out = []
            for g in range(groups):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self._ETH_P_IP))
                s.bind((f"br{g}", self._ETH_P_IP))
                s.settimeout(0.2)
                out.append(s)
            return out

        self._sockets = in_ns_thread(bed.router_ns, open_sockets)
        self._threads = [threading.Thread(target=self._read, args=(s,), daemon=True, name=f"sniff-br{g}")
                         for g, s in enumerate(self._sockets)]
        for t in self._threads:
            t.start()

    def _add(self, key: str, value: int) -> None:
        self._counts[key] = self._counts.get(key, 0) + value

    def _read(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = sock.recvfrom(65_600)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == self._PACKET_OUTGOING:
                continue
            with contextlib.suppress(Exception):
                self._account(frame[14:])

    def _account(self, ip: bytes) -> None:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        if not (src.startswith(ZONE_NET + ".") and dst.startswith(ZONE_NET + ".")):
            return
        if int(src.rsplit(".", 1)[1]) < FIRST_HOST or int(dst.rsplit(".", 1)[1]) < FIRST_HOST:
            return  # the bench's own requests from the router
        if src.split(".")[2] == dst.split(".")[2]:
            return
        payload = ip[ihl:total]
        with self._lock:
            if proto == 17:
                data = payload[8:]
                try:
                    packet = codec.decode_packet(data)
                except codec.DecodeError:
                    self._add("udp/undecoded", total)
                    return
                kinds = [codec.message_type(m).name.lower() for m in packet.messages]
                first = kinds[0] if kinds else "empty"
                self._add(f"udp/packet:{first}", total)
                self._add(f"udp/packets:{first}", 1)
                body = 0
                for m, kind in zip(packet.messages, kinds, strict=True):
                    size = codec.message_size(m)
                    body += size
                    self._add(f"udp/msg:{kind}", size)
                    if kind != first:
                        self._add(f"udp/on:{first}:{kind}", size)
                self._add("udp/headers", total - body)
            elif proto == 6:
                off = (payload[12] >> 4) * 4
                sport, dport = struct.unpack("!HH", payload[:4])
                data = payload[off:]
                key = (src, sport, dst, dport)
                rkey = (dst, dport, src, sport)
                m = self._PATH_RX.match(data)
                if m:
                    self._conn_path[key] = m.group(1).decode()
                path = self._conn_path.get(key) or self._conn_path.get(rkey) or "?"
                if len(self._conn_path) > 100_000:
                    self._conn_path.clear()
                self._add(f"tcp/{path}", total)
            else:
                self._add("other", total)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in self._sockets:
            s.close()
