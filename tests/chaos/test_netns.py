"""The harness itself: namespaces are isolated and private, each fault does what it says and is undone, and
nothing is left behind. Uses tiny UDP echo exchanges through `ns_socket` (no agents)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

from tests.chaos.netns import NETNS_DIR, PREFIX, Host, Testbed, ns_socket, remove_stale, run

pytestmark = pytest.mark.netns


def udp_delivered(src: Host, dst: Host, count: int = 5, size: int = 32, port: int = 9998) -> int:
    """Send `count` datagrams of `size` bytes as fast as possible; how many arrive."""
    rx = ns_socket(dst.ns, kind=socket.SOCK_DGRAM)
    tx = ns_socket(src.ns, kind=socket.SOCK_DGRAM)
    try:
        rx.bind((dst.addr, port))
        rx.settimeout(0.3)
        for _ in range(count):
            tx.sendto(b"x" * size, (dst.addr, port))
        got = 0
        with contextlib.suppress(TimeoutError):
            while True:
                rx.recvfrom(size + 1)
                got += 1
        return got
    finally:
        rx.close()
        tx.close()


def ours(bed: Testbed) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(bed.run_name)) \
        if NETNS_DIR.exists() else []


def test_layout_isolation_and_cleanup(tmp_path: Path) -> None:
    bed = Testbed(3, tmp_path)
    with bed:
        assert ours(bed) == sorted([bed.bridge_ns, *(h.ns for h in bed.hosts)])
        a, b, c = bed.hosts
        assert udp_delivered(a, b, 5) == 5
        # Private: the only routes are the bridge's /24 (no default route out of a host namespace).
        routes = run(["ip", "-n", a.ns, "route", "show"]).stdout
        assert "default" not in routes and "10.213.0.0/24" in routes
        # The root namespace has none of our addresses.
        assert "10.213.0." not in run(["ip", "-4", "addr", "show"]).stdout

        bed.partition([a], [b, c])
        assert udp_delivered(a, b, 5) == 0 and udp_delivered(c, a, 5) == 0
        assert udp_delivered(b, c, 5) == 5
        bed.heal()
        assert udp_delivered(a, b, 5) == 5 and udp_delivered(b, a, 5) == 5

        bed.loss(50)
        got = udp_delivered(a, b, 100)
        assert 20 <= got <= 80, got
        bed.clear_loss()
        assert udp_delivered(a, b, 20) == 20

        bed.link_down(c)
        assert udp_delivered(a, c, 5) == 0
        bed.link_up(c)
        assert udp_delivered(a, c, 5) == 5

        assert udp_delivered(a, b, 100, 1000) >= 90
        bed.bandwidth(b, "64kbit", burst="4kb", latency="50ms")
        assert "tbf" in run(["ip", "netns", "exec", b.ns, "tc", "qdisc", "show", "dev", b.iface]).stdout
        assert udp_delivered(a, b, 100, 1000) <= 30  # the shaped port toward b holds a few KB, drops the rest
        assert udp_delivered(b, a, 100, 1000) <= 30
        bed.clear_bandwidth(b)
        assert "tbf" not in run(["ip", "netns", "exec", b.ns, "tc", "qdisc", "show", "dev", b.iface]).stdout

        proc = bed.spawn(a, ["sleep", "60"])
        assert proc.alive()
    assert ours(bed) == []
    assert proc.popen.returncode is not None


def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    # A name of this harness whose creator cannot exist (a pid above pid_max): a crashed earlier run.
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    stale = f"{PREFIX}{dead_pid}-abcdef-h0"
    live = f"{PREFIX}{os.getpid()}-fedcba-h0"
    run(["ip", "netns", "add", stale])
    run(["ip", "netns", "add", live])
    try:
        removed = remove_stale()
        assert stale in removed and live not in removed
        names = [p.name for p in NETNS_DIR.iterdir()]
        assert stale not in names and live in names
    finally:
        run(["ip", "netns", "del", stale], check=False)
        run(["ip", "netns", "del", live], check=False)
