"""Wire and log encoding of the replicated state's own records: state rumors, log records, causal contexts.

Why a separate module: a state rumor is decoded once per delivered write, so its decoder is kept lean
(`decode_rumor`: a kept reader per size class, no call it can do without) while holding to the rules every
state decoder holds to (`codec_limits`); its entry is read in its own shape (`entry_decoding`).

Formats (msgpack arrays, first element a format tag so they can evolve; tags 3 and 4 are the anti-entropy
messages', `ae_codec`):
- state rumor payload (`StateRumor.payload`): [1, entry]
- log record (`Change`): [2, key, origin, entry or nil]
- causal context token (client write-back): [5, version vector, hlc]
Entries use `kvstore.entry_to_plain`.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from gossip_agent.core import hlc as hlc_mod
from gossip_agent.core.codec_limits import DEFAULT_LIMITS, MSGPACK_ERRORS, CodecLimits, StateCodecError, msgpack_caps
from gossip_agent.core.entry_decoding import (
    CRDT_TAG_BYTE,
    EntryOverLimit,
    ValueEntries,
    check_context_items,
    check_crdt_state,
    check_entry_counts,
    check_entry_head,
    checked_entry,
    decode_entry,
)
from gossip_agent.core.kvstore import CausalContext, Change, Entry, RefusedItem, entry_to_plain
from gossip_agent.core.packing import pack
from gossip_agent.core.vector_clock import MAX_COUNTER, VersionVector

RUMOR = 1
CHANGE = 2
CONTEXT = 5
_ORIGINS = frozenset({"local", "remote", "gc", "prune", "restore"})
_RUMOR_HEAD = bytes([0x92, RUMOR])  # [RUMOR, entry]: a fixarray of 2, the tag a positive fixint


def _unpack(data: bytes, limits: CodecLimits) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise StateCodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > limits.max_message_bytes:
        raise StateCodecError(f"message of {len(data)} bytes exceeds the {limits.max_message_bytes} byte cap")
    size = len(data)
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True,
            max_str_len=min(size, limits.max_str_bytes), max_bin_len=min(size, limits.max_bin_bytes),
            max_array_len=min(size, limits.max_items), max_map_len=min(size, limits.max_items),
            max_ext_len=0,
        )
    except MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None


def _decode(data: bytes, tag: int, length: int, limits: CodecLimits, what: str) -> list[Any]:
    plain = _unpack(data, limits)
    if not isinstance(plain, list) or len(plain) != length or plain[0] != tag or isinstance(plain[0], bool):
        raise StateCodecError(f"not a {what} (format tag {tag}, {length} fields)")
    return plain


def _guard(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except StateCodecError:
        raise
    except (ValueError, TypeError) as err:
        raise StateCodecError(f"{what}: {err}") from None


def encode_rumor(entry: Entry) -> bytes:
    """A state rumor payload: the key's whole state, so any delivery order converges."""
    return pack([RUMOR, entry_to_plain(entry)])


def decode_rumor(payload: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Entry:
    """One entry ([1, entry], as `encode_rumor` writes it), decoded as a pushed one is (`decode_entry`): its
    shape read from headers and each field built with bounds of its own. A peer's write-concern push
    (/v1/internal/replicate, up to 4 MiB, unauthenticated in plaintext mode) of nested arrays in the key built
    ~129 MiB and held the event loop 1.5 s, and an OR-set of 300k tiny elements ~4 s, before either was
    refused."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise StateCodecError(f"expected bytes, got {type(payload).__name__}")
    if len(payload) > limits.max_message_bytes:
        raise StateCodecError(f"message of {len(payload)} bytes exceeds the {limits.max_message_bytes} byte cap")
    if payload[:2] != _RUMOR_HEAD:  # (read as bytes, never decoded: a tag of nested arrays would be built)
        raise StateCodecError(f"not a state rumor (format tag {RUMOR}, 2 fields)")
    entry = memoryview(payload)[2:]
    if payload[3:4] != CRDT_TAG_BYTE:  # (entry[1:2], read from the payload: no memoryview slice per rumor)
        reader = _rumor_reader(len(payload), limits)
        if reader is not None:
            return checked_entry(reader.plain(entry, "state rumor"), limits)
    caps = msgpack_caps(len(payload), limits)
    if entry[1:2] == CRDT_TAG_BYTE:
        try:
            check_entry_head(entry, caps)
            check_crdt_state(entry, caps, limits)
        except (StateCodecError, EntryOverLimit):
            raise
        except MSGPACK_ERRORS as err:
            raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
    return decode_entry(entry, limits, caps, "state rumor")


REUSE_READER_BYTES = 64 * 1024
"""Rumors up to this size are read by a reader kept for their size class (`_rumor_reader`); larger ones (write
concern pushes and fetch answers of big values) by a fresh one, so no reader keeps a large buffer."""
_readers = threading.local()


def _rumor_reader(size: int, limits: CodecLimits) -> ValueEntries | None:
    """The value-entry reader for a rumor of `size` bytes decoded under `limits`, kept per thread and per size
    class (the next power of two, at least 256 bytes): a reader is an Unpacker whose buffer is allocated when it
    is made, which cost ~5 us of the ~12 us a 1 KiB rumor took to decode. Its caps are those of a fresh reader
    for a message of the class's size (`msgpack_caps`), so every bound stays within twice what the message's own size
    gives (a rumor of 1.1 kB: strings, binaries and arrays of at most 2,048). None above REUSE_READER_BYTES."""
    if size > REUSE_READER_BYTES:
        return None
    bucket = 1 << max(8, (size - 1).bit_length())
    cache: dict[int, tuple[CodecLimits, ValueEntries]] | None = getattr(_readers, "cache", None)
    if cache is None:
        cache = _readers.cache = {}
    kept = cache.get(bucket)
    if kept is not None and kept[0] is limits:
        return kept[1]
    reader = ValueEntries(msgpack_caps(bucket, limits), bucket)
    cache[bucket] = (limits, reader)  # (at most one per size class: 9 classes up to 64 KiB)
    return reader


def encode_change(change: Change) -> bytes:
    """One append-only log record. With the entry's encoding at hand (`Change.packed`) it is not encoded again:
    the record's last field is those bytes, after the other three packed with a nil in its place (msgpack
    packs an array's items one after the other, and nil is the one byte 0xc0), byte for byte the same."""
    if change.entry is None:
        return pack([CHANGE, change.key, change.origin, None])
    if change.packed is not None:
        return pack([CHANGE, change.key, change.origin, None])[:-1] + change.packed
    return pack([CHANGE, change.key, change.origin, entry_to_plain(change.entry)])


def decode_change(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Change:
    _, key, origin, entry = _decode(data, CHANGE, 4, limits, "log record")
    if not isinstance(key, str) or not isinstance(origin, str) or origin not in _ORIGINS:
        raise StateCodecError("log record: bad key or origin")
    # (Our own records: counters up to the overflow point, as a local write may go after a peer's forgery.)
    check_entry_counts(entry)
    decoded = checked_entry(entry, limits, MAX_COUNTER) if entry is not None else None
    if decoded is not None and decoded.key != key:
        raise StateCodecError("log record: key does not match its entry")
    return Change(key, decoded, origin)


def encode_refused(item: RefusedItem) -> bytes:
    """What recovery keeps aside (io/persistence `wal.rejected`) of a snapshot item `KvStore.restore` left
    out: an entry as a log record ([2, key, "restore", entry]), a graveyard item as the snapshot holds it
    ([key, context, timestamp])."""
    if item.kind == "entry":
        return pack([CHANGE, item.key, "restore", item.plain])
    return pack(item.plain)


def encode_context(context: CausalContext) -> bytes:
    """The opaque token a reader gets and sends back with its write (the HTTP layer base64s it); what it names:
    `kvstore.read_context`."""
    ts = context.timestamp
    return pack([CONTEXT, context.vv.to_plain(), [ts.wall_ms, ts.logical, ts.node]])


def decode_context(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> CausalContext:
    """A client's context token. Its counters may be anything a stored dot may carry (up to MAX_COUNTER): a token
    a read returns is always taken back. The client bound it was held to (2^53) was below what a key's own dots
    may reach (a peer's up to 2^62, this replica's past that), so a key whose dots went above it returned tokens
    it then refused, for good. A client's counters are never stored (`KvStore._local_write`), so no bound on
    them protects anything."""
    _, vv, ts = _decode(data, CONTEXT, 3, limits, "causal context")
    if isinstance(vv, list):
        check_context_items(len(vv))
    return CausalContext(_guard("context", VersionVector.from_plain, vv, MAX_COUNTER),
                         _guard("context", hlc_mod.from_plain, ts))
