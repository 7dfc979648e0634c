"""Hostile-operator checks of the state layer's durability: torn files, crashes in the snapshot window, a
disk that refuses writes. Real files in a temporary data dir; the disk-full case runs in a child process
with a file-size limit (RLIMIT_FSIZE), so no filesystem has to be mounted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from gossip_agent.io.persistence import DurableLog


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
