"""DurableLog: records survive reopening, torn tails are cut, snapshots replace the log atomically."""

import os
import pathlib
import subprocess
import sys

import pytest

from gossip_agent.io.persistence import DurableLog, _read_records


def test_records_survive_reopen(tmp_path: pathlib.Path) -> None:
    log = DurableLog(tmp_path, fsync="always")
    assert log.open() == (None, [])
    for i in range(100):
        log.append(f"r{i}".encode())
    log.close()
    again = DurableLog(tmp_path)
    snapshot, records = again.open()
    assert snapshot is None and records == [f"r{i}".encode() for i in range(100)]


def test_torn_and_corrupt_tails_are_cut_not_fatal(tmp_path: pathlib.Path) -> None:
    log = DurableLog(tmp_path)
    log.open()
    log.append(b"one")
    log.append(b"two")
    log.close()
    with open(tmp_path / "wal", "ab") as f:
        f.write(b"\x00\x00\x00\x09\x00")  # half a header, as after a crash mid-write
    log = DurableLog(tmp_path)
    assert log.open()[1] == [b"one", b"two"]
    assert log.torn_tail_bytes == 5
    log.append(b"three")
    log.close()
    data = bytearray((tmp_path / "wal").read_bytes())
    data[-1] ^= 0xFF  # corrupt the last record's payload: its CRC no longer matches
    (tmp_path / "wal").write_bytes(bytes(data))
    log = DurableLog(tmp_path)
    assert log.open()[1] == [b"one", b"two"]


def test_forged_length_does_not_allocate(tmp_path: pathlib.Path) -> None:
    (tmp_path / "wal").write_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    log = DurableLog(tmp_path)
    assert log.open()[1] == []


def test_snapshot_then_new_records(tmp_path: pathlib.Path) -> None:
    log = DurableLog(tmp_path)
    log.open()
    log.append(b"a")
    log.write_snapshot(b"STATE-A")
    log.append(b"b")
    log.close()
    log = DurableLog(tmp_path)
    assert log.open() == (b"STATE-A", [b"b"])
    assert not (tmp_path / "snapshot.tmp").exists()


def test_acknowledged_records_survive_kill_9(tmp_path: pathlib.Path) -> None:
    code = (
        "import os, sys\n"
        "from gossip_agent.io.persistence import DurableLog, _read_records\n"
        f"log = DurableLog({str(tmp_path)!r}, fsync='never'); log.open()\n"
        "for i in range(500):\n"
        "    log.append(b'x%d' % i)\n"
        "print('acked', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "acked" and proc.returncode == -9
    log = DurableLog(tmp_path)
    assert len(log.open()[1]) == 500


def test_bad_policy_rejected(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        DurableLog(tmp_path, fsync="sometimes")
    assert os.listdir(tmp_path) == []


def test_records_after_a_snapshot_capture_survive_whether_or_not_the_snapshot_finished(
        tmp_path: pathlib.Path) -> None:
    """The snapshot is written on a worker thread while the loop keeps appending: `begin_snapshot` moves the
    records the capture holds to `wal.prev`, new ones go to a fresh `wal`; a crash before `finish_snapshot`
    recovers the old snapshot plus both logs, after it the new snapshot plus the new log."""
    log = DurableLog(tmp_path)
    log.open()
    log.append(b"a")
    log.write_snapshot(b"STATE-A")
    log.append(b"b")
    log.begin_snapshot()  # the store (a, b) is captured now
    log.append(b"c")      # a write while the snapshot is being written
    log.close()           # ... and the process dies before it is on disk
    again = DurableLog(tmp_path)
    assert again.open() == (b"STATE-A", [b"b", b"c"])
    again.begin_snapshot()  # the earlier capture never finished: wal.prev keeps growing, nothing is lost
    again.append(b"d")
    again.finish_snapshot(b"STATE-ABC")
    again.close()
    assert not (tmp_path / "wal.prev").exists()
    last = DurableLog(tmp_path)
    assert last.open() == (b"STATE-ABC", [b"d"])


def test_a_batch_is_one_write_and_reads_back_in_order(tmp_path: pathlib.Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    log = DurableLog(tmp_path, fsync="never")
    log.open()
    log.append(b"first")
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)
    monkeypatch.setattr("gossip_agent.io.persistence.os.write", counting_write)
    log.append_many([b"a", b"bb", b"ccc"])
    log.append_many([])
    assert len(writes) == 1 and log.records_since_snapshot == 4
    log.close()
    assert DurableLog(tmp_path).open()[1] == [b"first", b"a", b"bb", b"ccc"]


def test_a_failed_batch_leaves_none_of_its_records_and_the_next_follow_the_last_good_one(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that stops part-way (disk full) is cut back to where the batch began, from the position the log
    keeps (no seek asks the OS), so what is appended next follows the last whole record, before and after a
    snapshot started a fresh wal."""
    log = DurableLog(tmp_path, fsync="never")
    log.open()
    log.append(b"kept")
    real_write = os.write
    calls = 0

    def failing_write(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data[:5]))  # part of the batch reached the file ...
        raise OSError(28, "No space left on device")  # ... then the disk was full
    monkeypatch.setattr("gossip_agent.io.persistence.os.write", failing_write)
    with pytest.raises(OSError):
        log.append_many([b"lost-1", b"lost-2"])
    monkeypatch.setattr("gossip_agent.io.persistence.os.write", real_write)
    assert log.records_since_snapshot == 1
    log.append(b"after")
    assert _read_records((tmp_path / "wal").read_bytes()) == ([b"kept", b"after"], (tmp_path / "wal").stat().st_size)
    log.begin_snapshot()
    log.finish_snapshot(b"snap")
    log.append(b"fresh")
    log.close()
    assert DurableLog(tmp_path).open() == (b"snap", [b"fresh"])
    assert not (tmp_path / "wal.prev").exists()
