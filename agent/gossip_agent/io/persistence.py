"""Durability for the replicated state: an append-only log plus periodic snapshots in a data directory.

Records are opaque bytes that the state layer can re-apply in order (replaying them over a snapshot that
already holds them ends in the same state). That is what keeps the snapshot step simple, and lets it run off
the event loop: `begin_snapshot` (on the loop, at the instant the store is captured) renames `wal` to
`wal.prev` and starts an empty `wal` for the records that follow; `finish_snapshot` (any thread) writes
`snapshot.tmp`, fsyncs, renames it over `snapshot` and removes `wal.prev`. Recovery replays `wal.prev` (if a
crash left one) then `wal` after the snapshot: before the rename they complete the old snapshot, after it
they only replay records the new one already holds.

Each record is framed as length (4 bytes) + CRC32 (4 bytes) + payload. Records reach the OS with an
unbuffered `os.write` before a write is acknowledged, so a `kill -9` loses nothing acknowledged; the fsync
policy decides what a machine crash may lose: `always` (fsync before acknowledging), `interval` (fsync
every `fsync_interval`), `never` (leave it to the OS). A torn or corrupt tail (power loss mid-write) is
cut off at the last whole record and reported, never fatal.

What the records and the snapshot hold is the state layer's to judge on recovery (io/state_service with
core/kvstore.KvStore.restore and core/state_codec.decode_change): an item it leaves out (over the context bound,
or a key no client or peer may write now: core/keys.py) is kept aside here, framed like the log, in
`wal.rejected` (`set_aside_record`), never dropped unseen.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a forged length in a damaged log must not allocate gigabytes


class DurableLog:
    """One data directory: `snapshot` (the last full state) and `wal` (records since)."""

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: str = "interval") -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync policy must be always, interval or never, got {fsync!r}")
        self.dir = Path(data_dir)
        self.fsync = fsync
        self.records_since_snapshot = 0
        self.torn_tail_bytes = 0
        self._fd: int | None = None
        self._pos = 0  # where the next record goes in `wal` (the rollback point of a failed append)
        self._unsynced = False

    @property
    def wal_path(self) -> Path:
        return self.dir / "wal"

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "snapshot"

    @property
    def prev_path(self) -> Path:
        return self.dir / "wal.prev"

    @property
    def rejected_path(self) -> Path:
        return self.dir / "wal.rejected"

    def set_aside_snapshot(self) -> Path:
        """Move an unreadable snapshot out of the way (kept for inspection, never overwritten): recovery goes on
        from the log, and the next snapshot is written fresh."""
        aside = self.dir / f"snapshot.unreadable-{int(time.time())}"
        os.replace(self.snapshot_path, aside)
        return aside

    def set_aside_record(self, record: bytes) -> None:
        """Keep a log record recovery could not apply (framed like the log), so nothing is dropped unseen."""
        with open(self.rejected_path, "ab") as f:
            f.write(_HEADER.pack(len(record), zlib.crc32(record)) + record)

    def open(self) -> tuple[bytes | None, list[bytes]]:
        """Create the directory if needed and return (snapshot or None, records logged after it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        snapshot = self.snapshot_path.read_bytes() if self.snapshot_path.exists() else None
        prev: list[bytes] = []
        if self.prev_path.exists():  # a snapshot did not finish: its records still count
            prev, good_prev = _read_records(self.prev_path.read_bytes())
            torn = self.prev_path.stat().st_size - good_prev
            if torn:  # cut it: the next begin_snapshot appends to wal.prev, and records behind a torn one are lost
                self.torn_tail_bytes += torn
                log.warning("data dir %s: cut %d bytes of a torn or corrupt wal.prev tail", self.dir, torn)
                os.truncate(self.prev_path, good_prev)
        records, good_bytes = self._read_wal()
        self._fd = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        if good_bytes < size:
            self.torn_tail_bytes += size - good_bytes
            log.warning("data dir %s: cut %d bytes of a torn or corrupt log tail", self.dir, size - good_bytes)
            os.ftruncate(self._fd, good_bytes)
        os.lseek(self._fd, good_bytes, os.SEEK_SET)
        self._pos = good_bytes
        self.records_since_snapshot = len(prev) + len(records)
        return snapshot, prev + records

    def _read_wal(self) -> tuple[list[bytes], int]:
        if not self.wal_path.exists():
            return [], 0
        return _read_records(self.wal_path.read_bytes())

    def append(self, record: bytes) -> None:
        """Log one record; when this returns the record survives a kill -9 (and, with fsync=always, a crash)."""
        self.append_many((record,))

    def append_many(self, records: Sequence[bytes]) -> None:
        """Log these records, in order, with one write (and with fsync=always one fsync): when this returns they
        survive a kill -9 (and, with fsync=always, a crash). A failed write leaves none of them in the log.

        One write per batch, not one per record: an anti-entropy chunk merges many entries in one step, and each
        record cost a write (and a seek for the rollback position, which is now kept here instead)."""
        if self._fd is None:
            raise RuntimeError("DurableLog.append before open()")
        frames = []
        for record in records:
            if len(record) > MAX_RECORD_BYTES:
                raise ValueError(f"record of {len(record)} bytes exceeds {MAX_RECORD_BYTES}")
            frames.append(_HEADER.pack(len(record), zlib.crc32(record)))
            frames.append(record)
        if not frames:
            return
        data = frames[0] + frames[1] if len(frames) == 2 else b"".join(frames)
        start = self._pos
        try:
            written = os.write(self._fd, data)  # (the common case: all of it at once)
            if written < len(data):
                rest = memoryview(data)
                while written < len(data):
                    written += os.write(self._fd, rest[written:])
        except OSError:  # (disk full) cut the part written: records appended later must not follow a torn one
            os.ftruncate(self._fd, start)
            os.lseek(self._fd, start, os.SEEK_SET)
            raise
        self._pos = start + written
        self.records_since_snapshot += len(records)
        if self.fsync == "always":
            os.fsync(self._fd)
        else:
            self._unsynced = True

    def sync(self) -> None:
        """fsync pending records (the `interval` policy calls this from a timer)."""
        if self._fd is not None and self._unsynced and self.fsync != "never":
            os.fsync(self._fd)
            self._unsynced = False

    def write_snapshot(self, blob: bytes) -> None:
        """Replace the snapshot atomically with `blob` (which must include every logged record), then
        start an empty log (both steps at once, on the calling thread)."""
        self.begin_snapshot()
        self.finish_snapshot(blob)

    def begin_snapshot(self) -> None:
        """The store was captured just now: later records go to a fresh `wal`, the ones the capture holds
        stay in `wal.prev` until `finish_snapshot` has the snapshot on disk. Call on the thread that appends,
        never while another snapshot is unfinished."""
        if self._fd is None:
            raise RuntimeError("DurableLog.begin_snapshot before open()")
        if self._unsynced and self.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        try:
            if self.prev_path.exists():  # the last snapshot failed: wal.prev keeps every record since the one before
                kept = self.prev_path.stat().st_size
                try:
                    with open(self.prev_path, "ab") as prev:
                        prev.write(self.wal_path.read_bytes())
                        prev.flush()
                        os.fsync(prev.fileno())
                except OSError:
                    os.truncate(self.prev_path, kept)  # drop the part copied: wal still holds those records
                    raise
                os.unlink(self.wal_path)
            else:
                os.replace(self.wal_path, self.prev_path)
        except OSError:  # (disk full) no snapshot this time, but the log stays open for the next records
            self._fd = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT, 0o600)
            self._pos = os.lseek(self._fd, 0, os.SEEK_END)
            raise
        self._fd = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._pos = 0
        self._sync_dir()
        self._unsynced = False
        self.records_since_snapshot = 0

    def finish_snapshot(self, blob: bytes) -> None:
        """Write `blob` (the store as captured at `begin_snapshot`) as the snapshot, atomically, then drop the
        records it holds. Touches no file the appending thread uses: safe on a worker thread."""
        tmp = self.dir / "snapshot.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # (disk full) give the space back: the log needs it more than a part snapshot does
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.snapshot_path)
        self._sync_dir()
        self.prev_path.unlink(missing_ok=True)

    def _sync_dir(self) -> None:
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


def _read_records(data: bytes) -> tuple[list[bytes], int]:
    """The whole records at the start of `data`, and how many bytes they take (the rest is a torn tail)."""
    records: list[bytes] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[pos + _HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break
        records.append(payload)
        pos = end
    return records, pos
