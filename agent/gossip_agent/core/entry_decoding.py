"""One replicated entry decoded from untrusted msgpack, its shape read from headers before anything is built.

Why a separate module: an entry arrives in a state rumor, an anti-entropy push and an anti-entropy answer,
and each of those once let a forged entry build far more than its bytes (nested arrays in a key: ~129 MiB
from a 4 MiB push; an OR-set of 300k tiny elements: seconds of CPU). Here every entry is (1) checked at its
headers (`check_entry_head`: tag, context nodes, version count; `check_crdt_state`: a CRDT state's bytes),
(2) built in its own shape (`ValueEntries` for value entries, field by field for CRDT entries: an array out
of place stops the build as soon as it is built), and (3) validated against the store's limits
(`checked_entry`). Only `StateCodecError` (the message is malformed) and `EntryOverLimit`, a kvstore
`InvalidEntry` (this entry alone is skipped), leave.
Entries use `kvstore.entry_to_plain`: [0, key, flat context, versions] or [1, key, timestamp, state].
"""

from __future__ import annotations

from typing import Any

import msgpack

from gossip_agent.core.codec_limits import MSGPACK_ERRORS, CodecLimits, StateCodecError, unpack_field
from gossip_agent.core.keys import key_problem, kind_problem
from gossip_agent.core.kvstore import CrdtEntry, Entry, InvalidEntry, entry_from_plain, entry_kind
from gossip_agent.core.vector_clock import MAX_ACCEPTED_COUNTER, MAX_CONTEXT_NODES, CounterAboveLimit

MAX_ENTRY_VERSIONS = 4096
"""Versions one decoded entry may hold. A local write keeps at most kvstore.MAX_LOCAL_SIBLINGS (64) live
values, so only concurrent writers add more; past this, an entry is refused before its versions are built
(one pushed entry of 100k versions passed the push-count bound and cost ~1.3 s of CPU per 4 MiB)."""

_PUSH_BYTES_PER_LIST = 2
"""The fewest body bytes an honest push spends per msgpack array: an OR-set element's smallest item is
[element, [[node, n]]], 3 arrays in ~7 bytes. A push decoded with more arrays than its bytes / 2 (+ a few) is
refused as it is built: nested empty arrays cost one byte of body each and ~64 bytes of memory once built."""

VALUE_TAG_BYTE = b"\x00"  # kvstore's value and CRDT entry tags, as the positive fixints an encoder writes
CRDT_TAG_BYTE = b"\x01"


class EntryOverLimit(InvalidEntry):
    """A well-formed entry whose key or value is longer than the decoder accepts (`CodecLimits`), that carries
    a counter above the peer bound (vector_clock.MAX_ACCEPTED_COUNTER), whose key no client could write
    (`invalid_key`: core/keys.key_problem) or whose kind contradicts its key's prefix (`wrong_kind`:
    core/keys.kind_problem): that entry is skipped, counted under `reason`, and the rest of its
    message is applied. It used to be a StateCodecError, which failed the whole anti-entropy answer or push
    carrying it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def checked_entry(plain: Any, limits: CodecLimits, max_counter: int = MAX_ACCEPTED_COUNTER) -> Entry:
    """An entry from kvstore's plain form, refused (StateCodecError) malformed, and skipped (EntryOverLimit)
    with a key or value past `limits` or a counter above `max_counter` (MAX_ACCEPTED_COUNTER for peers; this
    replica's own log records: vector_clock.MAX_COUNTER): what every decoder hands the store. A counter past the
    bound was a StateCodecError, which failed the whole anti-entropy exchange or push carrying the entry (every
    session with that peer, for good). A value entry's version and context counts are bounded by its reader,
    at their headers (`ValueEntries`; a log record, unpacked whole: `check_entry_counts`)."""
    try:
        entry: Entry = entry_from_plain(plain, max_counter)  # (state_codec's `_guard`, inlined: one call less)
    except StateCodecError:
        raise
    except CounterAboveLimit as err:
        raise EntryOverLimit("counter_too_large", f"entry: {err}") from None
    except (ValueError, TypeError) as err:
        raise StateCodecError(f"entry: {err}") from None
    try:
        key_bytes = len(entry.key.encode())
    except UnicodeEncodeError:
        raise StateCodecError("entry: key is not valid UTF-8") from None
    if key_bytes == 0:
        raise StateCodecError("entry: empty key")
    if key_bytes > limits.max_key_bytes:
        raise EntryOverLimit("key_too_long", f"entry: key of {key_bytes} bytes (limit {limits.max_key_bytes})")
    problem = key_problem(entry.key)
    if problem is not None:  # (a key no client could write: it would break every watcher and log it reached)
        raise EntryOverLimit("invalid_key", f"entry: {problem}")
    problem = kind_problem(entry.key, entry_kind(entry))
    if problem is not None:  # (it would make the key's CRDT route fail at every replica it reached)
        raise EntryOverLimit("wrong_kind", f"entry: {problem}")
    if not isinstance(entry, CrdtEntry):
        max_value = limits.max_value_bytes
        for version in entry.versions:
            if version.value is not None and len(version.value) > max_value:
                raise EntryOverLimit("value_too_large", f"entry: value of {len(version.value)} bytes "
                                                        f"(limit {limits.max_value_bytes})")
    return entry


def check_entry_counts(plain: Any) -> None:
    """A value entry's versions (MAX_ENTRY_VERSIONS) and context nodes (MAX_CONTEXT_NODES) in kvstore's plain
    form, for an entry built whole (a log record) rather than by a reader that counts them at their headers."""
    if isinstance(plain, list) and len(plain) == 4 and plain[0] == 0:  # (a value entry: tag 0, kvstore.entry_to_plain)
        if isinstance(plain[3], list) and len(plain[3]) > MAX_ENTRY_VERSIONS:
            raise StateCodecError(f"entry: {len(plain[3])} versions (limit {MAX_ENTRY_VERSIONS})")
        if isinstance(plain[2], list):
            check_context_items(len(plain[2]))


def check_context_items(items: int) -> None:
    """A value entry's context is a flat [node, counter, ...] list: refused past MAX_CONTEXT_NODES nodes."""
    if items > 2 * MAX_CONTEXT_NODES:
        raise StateCodecError(f"entry: a context of {items // 2} writer nodes (limit {MAX_CONTEXT_NODES})")


def check_crdt_state(entry: memoryview, caps: dict[str, Any], limits: CodecLimits) -> None:
    """EntryOverLimit (`state_too_large`) if `entry` is a CRDT entry whose state is longer than max_crdt_bytes
    (the store would refuse it once built): read from its headers, nothing built. Skipped and counted by reason
    as any entry over a ceiling is (rumors: a dropped rumor; answers and pushes: the rest applies); it was left
    out of gossip_state_refused_total, and a rumor's was a StateCodecError."""
    if entry[1:2] == CRDT_TAG_BYTE and _crdt_state_bytes(entry, caps) > limits.max_crdt_bytes:
        raise EntryOverLimit("state_too_large", f"entry: a CRDT state of more than {limits.max_crdt_bytes} "
                                                "bytes (the CRDT state ceiling)")


def check_entry_head(entry: memoryview, caps: dict[str, Any]) -> None:
    """An entry's shape read from its headers (nothing built): [tag 0|1, key, context|timestamp, versions|value],
    and a value entry's context nodes (MAX_CONTEXT_NODES) and version count."""
    peek = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(entry)), **caps)
    peek.feed(entry)
    if peek.read_array_header() != 4:
        raise StateCodecError("entry: an entry is [tag, key, ...] (4 fields)")
    tag = entry[peek.tell():peek.tell() + 1]
    if tag not in (VALUE_TAG_BYTE, CRDT_TAG_BYTE):
        raise StateCodecError("entry: an entry's tag is 0 (value) or 1 (CRDT)")
    if tag == VALUE_TAG_BYTE:
        for _ in range(2):  # tag, key
            peek.skip()
        context = peek.read_array_header()
        check_context_items(context)
        for _ in range(context):
            peek.skip()
        versions = peek.read_array_header()
        if versions > MAX_ENTRY_VERSIONS:
            raise StateCodecError(f"entry: {versions} versions (limit {MAX_ENTRY_VERSIONS})")


def decode_entry(raw: memoryview, limits: CodecLimits, caps: dict[str, Any], what: str,
                 values: ValueEntries | None = None) -> Entry:
    """One entry whose head passed `check_entry_head` (a value entry's is read again here). A value entry has a
    fixed shape, [0, key, flat context, versions of 5 scalars], so each part is built with exactly that many
    arrays (`ValueEntries`, or `values`: one reused over a message's entries): nested arrays or long lists
    where a scalar belongs are refused as soon as the first is built. A CRDT entry (its state bounded by
    max_crdt_bytes before this) is read field by field (`_crdt_plain`)."""
    if raw[1:2] == CRDT_TAG_BYTE:
        plain = _crdt_plain(raw, limits, caps, what)
    else:
        plain = (values or ValueEntries(caps, len(raw))).plain(raw, what)
    return checked_entry(plain, limits)


def _crdt_plain(raw: memoryview, limits: CodecLimits, caps: dict[str, Any], what: str) -> list[Any]:
    """A CRDT entry, [1, key, timestamp, state], split by msgpack's skip (which builds nothing) and each field
    built with a bound of its own: the tag and key scalars (no array), the timestamp one flat array of 3 (an
    HLC), and only the state at most one array or map per `_PUSH_BYTES_PER_LIST` of ITS bytes. Unpacked whole
    with a bound from the entry's length, nested arrays in the key or timestamp built ~32 bytes of memory and
    ~0.7 s of CPU per MiB before the refusal (review)."""
    walker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(raw)), **caps)
    walker.feed(raw)
    try:
        if walker.read_array_header() != 4:
            raise StateCodecError(f"{what}: a CRDT entry is an array of 4")
        bounds = [walker.tell()]
        for _ in range(4):
            walker.skip()
            bounds.append(walker.tell())
    except StateCodecError:
        raise
    except MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
    if bounds[-1] != len(raw):
        raise StateCodecError(f"{what}: trailing bytes after a CRDT entry")
    tag, key, timestamp, state = (raw[bounds[i]:bounds[i + 1]] for i in range(4))
    return [unpack_field(tag, limits, 0, what), unpack_field(key, limits, 0, what),
            unpack_field(timestamp, limits, 1, what, 3),
            unpack_field(state, limits, len(state) // _PUSH_BYTES_PER_LIST + 64, what)]


class _ShapeError(Exception):
    pass


_VALUE_ENTRY_MAX_ARRAY = max(2 * MAX_CONTEXT_NODES, MAX_ENTRY_VERSIONS)
"""The longest array a value entry holds (its flat context): one out of place is built at most this long."""


class ValueEntries:
    """Reads value entries' plain data, each in its fixed shape: the tag read as a byte, the key only if it is
    a string, the context (MAX_CONTEXT_NODES) and versions (MAX_ENTRY_VERSIONS) counted at their headers, and
    every array checked against that shape as soon as it is built (`_EntryShape`): the flat context, then
    versions of 5, then the versions array. Nested arrays, or a long list where a scalar belongs, stop the
    build at the first array out of place (at most `_VALUE_ENTRY_MAX_ARRAY` long), so what one entry builds
    stays in proportion to what it may hold. One reader serves the entries of one message (an Unpacker per
    entry cost ~2 us); after an error it starts afresh."""

    __slots__ = ("_kwargs", "_max_bytes", "_shape", "_walker")

    def __init__(self, caps: dict[str, Any], max_bytes: int) -> None:
        self._kwargs = {**caps, "max_map_len": 0, "max_array_len": min(caps["max_array_len"], _VALUE_ENTRY_MAX_ARRAY)}
        self._max_bytes = max(1, max_bytes)
        self._shape = _EntryShape()
        self._walker: msgpack.Unpacker | None = None

    def plain(self, raw: memoryview, what: str) -> list[Any]:
        walker = self._walker
        if walker is None:
            walker = self._walker = msgpack.Unpacker(raw=False, max_buffer_size=self._max_bytes,
                                                     list_hook=self._shape, **self._kwargs)
        shape = self._shape
        shape.reset()  # a kept reader: nothing of an earlier (refused) rumor's shape may carry over
        base = walker.tell()
        try:
            walker.feed(raw)
            tell = walker.tell
            size = len(raw)
            if walker.read_array_header() != 4:
                raise _ShapeError
            at = tell() - base
            if at >= size or raw[at] != 0:  # the value tag (a positive fixint 0)
                raise _ShapeError
            walker.skip()
            if not _is_str(raw, tell() - base):
                raise _ShapeError
            key = walker.unpack()
            items = _array_len(raw, tell() - base)
            check_context_items(items)
            shape.context(items)
            context = walker.unpack()
            versions = _array_len(raw, tell() - base)
            if versions > MAX_ENTRY_VERSIONS:
                raise StateCodecError(f"entry: {versions} versions (limit {MAX_ENTRY_VERSIONS})")
            shape.versions(versions)
            plain_versions = walker.unpack()
            if tell() - base != size:
                raise StateCodecError(f"{what}: an entry has trailing bytes")
        except BaseException as err:
            self._walker = None  # (its buffer may hold the rest of this entry)
            if isinstance(err, StateCodecError):
                raise
            if isinstance(err, _ShapeError):
                raise StateCodecError(f"{what}: an entry is [0, key, [node, counter, ...], [[node, counter, "
                                      "wall_ms, logical, value], ...]]") from None
            if isinstance(err, MSGPACK_ERRORS):
                raise StateCodecError(f"{what}: malformed msgpack: {type(err).__name__}: {err}") from None
            raise
        return [0, key, context, plain_versions]


class _EntryShape:
    """A msgpack list_hook for a value entry's context and versions: each array, as it is built (inner ones
    first), must be the one the shape expects next, of the length its header gave: the context, or the
    versions' arrays of 5 then the versions array; any other stops the build (_ShapeError)."""

    __slots__ = ("expect", "fives", "outer")

    def __init__(self) -> None:
        self.expect = -1  # the length of the next array (-1: no array may be built now)
        self.fives = 0    # versions still to come
        self.outer = -1   # the versions array's length

    def reset(self) -> None:
        """Before each entry: no array may be built until its header says what comes."""
        self.expect, self.fives, self.outer = -1, 0, -1

    def context(self, items: int) -> None:
        self.expect = items

    def versions(self, count: int) -> None:
        self.fives, self.outer, self.expect = count, count, (5 if count else 0)

    def __call__(self, items: list[Any]) -> list[Any]:
        if len(items) != self.expect:
            raise _ShapeError
        if self.fives:
            self.fives -= 1
            self.expect = 5 if self.fives else self.outer
        else:
            self.expect = -1
        return items


def _is_str(data: memoryview, pos: int) -> bool:
    """The msgpack value at `pos` is a string (fixstr, str 8/16/32)."""
    return pos < len(data) and (0xA0 <= data[pos] <= 0xBF or 0xD9 <= data[pos] <= 0xDB)


def _array_len(data: memoryview, pos: int) -> int:
    """The length in the msgpack array header at `pos`, read as bytes (the value is not consumed)."""
    first = data[pos] if pos < len(data) else -1
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first in (0xDC, 0xDD):
        width = 2 if first == 0xDC else 4
        if pos + 1 + width <= len(data):
            return int.from_bytes(data[pos + 1:pos + 1 + width], "big")
    raise _ShapeError


def _crdt_state_bytes(entry: memoryview, caps: dict[str, Any]) -> int:
    """Bytes a CRDT entry's state takes on the wire (its last field; what kvstore limits once it is built)."""
    peek = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(entry)), **caps)
    peek.feed(entry)
    peek.read_array_header()
    for _ in range(3):  # tag, key, timestamp
        peek.skip()
    start: int = peek.tell()
    return len(entry) - start

