"""bench_load's lean measuring apparatus: the kernel's 1-in-K capture sample, the watch reader child, the raw PUT
client, and what sampling changes in the byte accounting.

The BPF program is run by a small interpreter of the instructions it uses (the kernel is not asked: a test must
not need root), on hand-made frames; the reader and the PUT client talk to local fake servers. No timing is
asserted: only that keys split across reads are found, stamps come from this machine's monotonic clock, and
responses are matched to requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402


def run_bpf(prog: list[tuple[int, int, int, int]], frame: bytes, pkttype: int, rand: int) -> int:
    """The classic BPF subset bpf_program uses; returns the kept length (0: dropped)."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == 0x20:    # ld word abs / ancillary
            a = pkttype if k == 0xFFFFF004 else rand if k == bench_load.SKF_AD_RANDOM else \
                struct.unpack_from("!I", frame, k)[0]
        elif code == 0x28:  # ldh abs
            a = struct.unpack_from("!H", frame, k)[0]
        elif code == 0x30:  # ldb abs
            a = frame[k]
        elif code == 0xB1:  # ldxb 4*([k]&0xf)
            x = 4 * (frame[k] & 0x0F)
        elif code == 0x48:  # ldh [x+k]
            a = struct.unpack_from("!H", frame, x + k)[0]
        elif code == 0x94:  # mod #k
            a %= k
        elif code in (0x15, 0x35, 0x25):  # jeq, jge, jgt #k
            hit = a == k if code == 0x15 else a >= k if code == 0x35 else a > k
            pc += jt if hit else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def udp_frame(dport: int, src: str = "127.0.0.1", proto: int = 17) -> bytes:
    eth = b"\0" * 12 + b"\x08\x00"
    ip = bytes([0x45, 0]) + struct.pack("!H", 28) + b"\0" * 5 + bytes([proto]) + b"\0\0" + \
        socket.inet_aton(src) + socket.inet_aton("127.0.0.1")
    return eth + ip + struct.pack("!HHHH", 5000, dport, 8, 0)


@pytest.mark.parametrize("k", [1, 8])
def test_capture_filter_keeps_one_in_k_of_the_agents_datagrams_and_nothing_else(k: int) -> None:
    prog = bench_load.bpf_program(23000, 23100, k)
    assert len(prog) == 16 + (3 if k > 1 else 0)
    inside = udp_frame(23050)
    kept = [r for r in range(4 * k) if run_bpf(prog, inside, 0, r)]
    assert kept == [r for r in range(4 * k) if r % k == 0]           # 1 in k, by the random number only
    for other in (udp_frame(22999), udp_frame(23101), udp_frame(23050, src="127.0.0.2"),
                  udp_frame(23050, proto=6)):
        assert not any(run_bpf(prog, other, 0, r) for r in range(k))  # outside: never, whatever the draw
    assert not run_bpf(prog, inside, 4, 0)                             # the outgoing copy (PACKET_OUTGOING)


def test_capture_sample_every_keeps_small_runs_whole() -> None:
    assert bench_load.capture_sample_every(8, 10, 6.0, 500) == 1
    assert bench_load.capture_sample_every(50, 100, 6.0, 500) == 15   # 50 x (6 + 150) = 7,800/s
    assert bench_load.capture_sample_every(50, 100, None, 0) == 1


def test_capture_kept_counts_the_sample_it_asked_for() -> None:
    r = {"nft_whole": {"bytes": 9_000, "udp_bytes": 9_000, "udp_packets": 80, "tcp_bytes": 0},
         "floor_bytes_per_write": 1_000,
         "capture": {"packets": 9, "wire_bytes": 1_000, "sample_every": 8, "undecoded_bytes": 100,
                     "messages": {"state": 9}, "wire_bytes_by_type": {"state": 900}},
         "agent_counters": {"messages_out_by_type": {"state": 80}}}
    out = bench_load.byte_figures(r, writes=3, n=3, write_window=1.0)
    assert out["capture_kept"] == 0.9                       # 9 of the ~10 the 1-in-8 sample asked for
    # Undecoded: 10 % of the captured bytes, so 10 % of the UDP total (not its sampled bytes beside whole counts).
    assert out["bytes_by_type"] == {"state": 8_100, "udp_undecoded": 900}


class FakeWatch:
    """A one-connection HTTP server sending a chunked watch stream, the key line split across two sends."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.request = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.srv.accept()
        with conn:
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(4096)

            def chunk(line: bytes) -> bytes:
                return b"%x\r\n" % len(line) + line + b"\r\n"

            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + chunk(b'{"event": "watching", "prefix": "bench/"}\n'))
            both = chunk(b'{"event":"put","key":"bench/r/1","values":[]}\n') + \
                chunk(b'{"event":"put","key":"bench/r/2","values":[]}\n')
            cut = both.index(b"bench/r/2") + 4     # inside the second key
            conn.sendall(both[:cut])
            time.sleep(0.05)                        # (the split holds whether or not the reads coalesce)
            conn.sendall(both[cut:])
        self.srv.close()


def test_watch_reader_finds_keys_split_across_reads_and_stamps_them_with_the_monotonic_clock() -> None:
    fake = FakeWatch()
    t0 = time.perf_counter()
    # stdin stays open (the driver's end of the pipe): the reader ends when its only stream does.
    # Default priority, lines gathered 1 ms after each wake-up, agent index 7 at the fake's port.
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bench_load.py"),
                             f"--watch-reader=0/1/7:{fake.port}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(60) == 0, stderr.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stdin is not None
        proc.stdin.close()
    t1 = time.perf_counter()
    assert fake.request.startswith(b"GET /v1/watch?prefix=bench/ HTTP/1.1\r\n")
    lines = stdout.splitlines()
    assert lines[0] == b"R 7"
    arrivals = [a for line in lines if line.startswith(b"A ") for a in json.loads(line[2:])]
    assert [(i, k) for i, k, _ in arrivals] == [(7, "bench/r/1"), (7, "bench/r/2")]
    assert all(t0 <= t <= t1 for _, _, t in arrivals)  # perf_counter is CLOCK_MONOTONIC: one clock for both
    assert b"E 7 watch stream closed" in lines  # (arrivals still unsent follow it: batches go every 0.1 s)


def test_putter_sends_stamped_requests_and_reuses_the_connection() -> None:
    async def main() -> None:
        seen: list[tuple[str, bytes]] = []

        async def put(request: web.Request) -> web.Response:
            seen.append((request.path_qs, await request.read()))
            if request.match_info["key"] == "missing":
                return web.json_response({"error": "no"}, status=404)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_put("/v1/kv/{key}", put)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        putter = bench_load.Putter()
        try:
            await putter.warm([port])
            statuses = []
            for key in ("a?priority=critical", "missing", "b"):
                conn = putter.take(port)
                assert conn is not None            # the one warm connection, back in the pool each time
                before = time.perf_counter()
                stamp = putter.send(conn, bench_load.put_request(port, f"/v1/kv/{key}", b"v" * 300))
                assert stamp >= before
                statuses.append(await putter.wait(port, conn, 10))
            assert statuses == [200, 404, 200]
            assert seen == [("/v1/kv/a?priority=critical", b"v" * 300), ("/v1/kv/missing", b"v" * 300),
                            ("/v1/kv/b", b"v" * 300)]
        finally:
            putter.close()
            await runner.cleanup()

    asyncio.run(main())


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs Linux and root")
@pytest.mark.parametrize("spec", ["rt", "-5"])
def test_observer_priority_raises_only_this_thread_and_no_child(spec: str) -> None:
    seen: dict[str, object] = {}

    def observer() -> None:  # a thread of its own: the test's main thread keeps its priority whatever happens
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)  # not 0 when the tests run under `nice`
        undo = bench_load.observer_priority(spec)
        assert undo is not None
        seen["policy"] = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
        child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0), os.nice(0))"],
                               capture_output=True, text=True, timeout=60)
        seen["child"] = child.stdout.split()
        undo()
        seen["after"] = (os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid))

    t = threading.Thread(target=observer)
    t.start()
    t.join(60)
    assert seen["policy"] == (os.SCHED_RR if spec == "rt" else os.SCHED_OTHER)
    before = seen["before"]
    assert isinstance(before, int)
    assert seen["nice"] == (before if spec == "rt" else -5)   # SCHED_RR leaves the nice value as it was
    assert seen["child"] == [str(os.SCHED_OTHER), "0"]        # an agent started from it would run at the default
    assert seen["after"] == (os.SCHED_OTHER, before)
    assert bench_load.observer_priority("0") is None
