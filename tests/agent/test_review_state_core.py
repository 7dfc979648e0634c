"""Hostile-operator checks of the state layer's durability: torn files, crashes in the snapshot window, a
disk that refuses writes. Real files in a temporary data dir; the disk-full case runs in a child process
with a file-size limit (RLIMIT_FSIZE), so no filesystem has to be mounted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

from gossip_agent.cli.cluster import LocalCluster, free_port_block
from gossip_agent.io.persistence import DurableLog
from tests.agent.test_state_processes import config, get, wait_for


def _crash(log: DurableLog) -> None:
    """What a kill -9 leaves: the files as they are, the descriptor gone."""
    if log._fd is not None:
        os.close(log._fd)
        log._fd = None


def test_a_torn_wal_prev_does_not_hide_records_logged_after_it(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, fsync="never")
    log.open()
    for i in range(3):
        log.append(b"old%d" % i)
    log.begin_snapshot()  # the snapshot is captured, then the process dies before it is on disk
    log.append(b"new0")
    _crash(log)
    with open(tmp_path / "wal.prev", "ab") as prev:  # a torn tail: a record header with half its payload
        prev.write(b"\x00\x00\x00\x10abc")

    log = DurableLog(tmp_path, fsync="never")
    _, records = log.open()
    assert records == [b"old0", b"old1", b"old2", b"new0"]
    log.append(b"ack1")  # acknowledged to a client
    log.begin_snapshot()  # dies again before the snapshot is on disk
    _crash(log)

    _, records = DurableLog(tmp_path, fsync="never").open()
    assert records[-2:] == [b"new0", b"ack1"], records


_DISK_FULL = textwrap.dedent("""
    import os, resource, signal, sys
    from gossip_agent.io.persistence import DurableLog
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    log = DurableLog(sys.argv[1], fsync="never")
    log.open()
    log.append(b"a" * 3000)
    log.begin_snapshot()            # the snapshot write fails: wal.prev stays
    log.append(b"b" * 3000)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        log.begin_snapshot()        # appending the wal to wal.prev runs out of room
    except OSError as exc:
        print("begin failed:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    log.append(b"c" * 10)           # the disk has room again: the log must take writes
    log.close()
""")


def test_a_snapshot_start_that_runs_out_of_disk_keeps_the_log_writable(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _DISK_FULL, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "begin failed" in done.stdout  # the limit did bite
    _, records = DurableLog(tmp_path).open()
    assert records == [b"a" * 3000, b"b" * 3000, b"c" * 10]


_APPEND_DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from gossip_agent.io.persistence import DurableLog
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = DurableLog(sys.argv[1], fsync="never")
    log.open()
    log.append(b"a" * 3000)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        log.append(b"b" * 3000)     # part of the record fits, then the disk is full: not acknowledged
    except OSError as exc:
        print("append failed:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    log.append(b"c" * 10)           # room again: this one is acknowledged
    log.close()
""")


def test_an_append_that_runs_out_of_disk_leaves_no_part_record_before_later_ones(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _APPEND_DISK_FULL, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "append failed" in done.stdout
    _, records = DurableLog(tmp_path).open()
    assert records == [b"a" * 3000, b"c" * 10]


_SNAPSHOT_DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from gossip_agent.io.persistence import DurableLog
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = DurableLog(sys.argv[1], fsync="never")
    log.open()
    log.append(b"a" * 100)
    log.begin_snapshot()
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        log.finish_snapshot(b"s" * 10_000)  # the disk fills up halfway through the snapshot
    except OSError as exc:
        print("snapshot failed:", exc)
    log.close()
""")


def test_a_snapshot_that_runs_out_of_disk_gives_the_space_back(tmp_path: Path) -> None:
    """The part-written snapshot.tmp would hold the last free space, so the log could take no more records."""
    done = subprocess.run([sys.executable, "-c", _SNAPSHOT_DISK_FULL, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "snapshot failed" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal", "wal.prev"]
    _, records = DurableLog(tmp_path).open()
    assert records == [b"a" * 100]


def _put(addr: str, key: str, value: bytes) -> int | None:
    """The status of one PUT, None when the agent is gone (connection refused or reset)."""
    req = urllib.request.Request(f"http://{addr}/v1/kv/{key}", data=value, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_writes_during_a_graceful_stop_are_logged_or_refused_with_503(tmp_path: Path) -> None:
    """SIGTERM under a stream of writes: every acknowledged write is there after the restart, and a write
    that arrives after the log is closed is told to go elsewhere (503), not a server error (500)."""
    base = free_port_block(1)
    cfg = config("g0", base, [], tmp_path / "data", storage={"snapshotEvery": 7})
    acked: dict[str, bytes] = {}
    statuses: list[int] = []
    with LocalCluster(tmp_path) as c:
        agent = c.start(cfg)
        wait_for(lambda: agent.status(), 60.0, "g0 to start")
        gone = threading.Event()

        def writer(t: int) -> None:
            for i in range(100_000):
                key, value = f"t{t}-{i}", b"v%d" % i
                status = _put(agent.addr, key, value)
                if status is None:
                    gone.set()
                    return
                statuses.append(status)
                if status == 200:
                    acked[key] = value

        threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 200, 60.0, "200 acknowledged writes")
        agent.signal(signal.SIGTERM)
        assert agent.wait(60.0) == 0
        for t in threads:
            t.join(60.0)
        assert gone.is_set()
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        agent = c.start(cfg)
        wait_for(lambda: agent.status(), 60.0, "g0 to restart")
        missing = [key for key, value in acked.items() if get(agent, key) != value]
        assert not missing, missing[:5]
