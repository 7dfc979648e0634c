"""Wire and log encoding of the replicated state: msgpack, with every size checked before allocation.

Why a separate module: decoding is where untrusted bytes meet the store. Every decoder here (1) refuses
input longer than the message cap before parsing, (2) parses with msgpack limits on string, binary, array
and map lengths, so a forged length prefix ("a 4 GiB string follows") fails instead of allocating, and
(3) validates the shape of the result. Whatever the input, the only exception is `StateCodecError`.

Formats (msgpack arrays, first element a format tag so they can evolve):
- state rumor payload (`StateRumor.payload`): [1, entry]
- log record (`Change`): [2, key, origin, entry or nil]
- anti-entropy request: [3, [bits, depth], root or nil, descend, listing, push, want, want_nodes]
- anti-entropy response: [4, [bits, depth], root or nil, children, listings, entries, collected, truncated]
- causal context token (client write-back): [5, version vector, hlc]
Node lists are flat [level, index, level, index, ...]; entries use `kvstore.entry_to_plain`.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from gossip_agent.core import hlc as hlc_mod
from gossip_agent.core import packing
from gossip_agent.core.ae_entries import PushedEntries
from gossip_agent.core.anti_entropy import (
    KEY_ID_BYTES,
    MERGE_CHUNK_BYTES,
    RECORD_BYTES,
    AeMessage,
    AeRequest,
    AeResponse,
    Children,
    Limits,
    Listing,
    NodeId,
    answer_excess,
)
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import (
    CausalContext,
    Change,
    CrdtEntry,
    Entry,
    InvalidEntry,
    RefusedItem,
    entry_from_plain,
    entry_to_plain,
)
from gossip_agent.core.merkle import HASH_BYTES, MAX_DEPTH, MAX_FANOUT
from gossip_agent.core.vector_clock import MAX_CONTEXT_NODES, VersionVector

RUMOR = 1
CHANGE = 2
AE_REQUEST = 3
AE_RESPONSE = 4
CONTEXT = 5
_ORIGINS = frozenset({"local", "remote", "gc", "prune", "restore"})


class StateCodecError(ValueError):
    """Malformed, oversized or unknown input; the message says which."""


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Caps applied while decoding. Build with `CodecLimits.from_config(state_config)`."""

    max_key_bytes: int = 256
    max_value_bytes: int = 64 * 1024
    max_message_bytes: int = 16 << 20   # whole message, checked before parsing
    max_str_bytes: int = 4096           # any string (keys, node names, set elements)
    max_bin_bytes: int = 1 << 20        # any binary (values, hash blocks, listings)
    max_items: int = 1 << 20            # any array or map length

    @classmethod
    def from_config(cls, state: StateConfig, *, max_message_bytes: int = 16 << 20) -> CodecLimits:
        return cls(max_key_bytes=state.max_key_bytes, max_value_bytes=state.max_value_bytes,
                   max_message_bytes=max_message_bytes, max_str_bytes=max(4096, state.max_key_bytes),
                   max_bin_bytes=max(1 << 20, state.max_value_bytes))


DEFAULT_LIMITS = CodecLimits()

_MSGPACK_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException)
"""What msgpack raises on malformed input (or input past its caps): each turned into a StateCodecError."""


# -- framing -------------------------------------------------------------------------------------------
def _pack(data: Any) -> bytes:
    return packing.pack(data)  # (msgpack.packb's bytes, without a new Packer per call)


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
    except _MSGPACK_ERRORS as err:
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


# -- entries, rumors, log records ----------------------------------------------------------------------
def _entry(plain: Any, limits: CodecLimits) -> Entry:
    if isinstance(plain, list) and len(plain) == 4 and plain[0] == 0:  # (a value entry: tag 0, kvstore.entry_to_plain)
        if isinstance(plain[3], list) and len(plain[3]) > MAX_ENTRY_VERSIONS:
            raise StateCodecError(f"entry: {len(plain[3])} versions (limit {MAX_ENTRY_VERSIONS})")
        if isinstance(plain[2], list):
            _check_context_items(len(plain[2]))
    try:
        entry: Entry = entry_from_plain(plain)  # (`_guard`, inlined: one call fewer per rumor)
    except StateCodecError:
        raise
    except (ValueError, TypeError) as err:
        raise StateCodecError(f"entry: {err}") from None
    try:
        key_bytes = len(entry.key.encode())
    except UnicodeEncodeError:
        raise StateCodecError("entry: key is not valid UTF-8") from None
    if not 0 < key_bytes <= limits.max_key_bytes:
        raise StateCodecError(f"entry: key of {key_bytes} bytes (limit {limits.max_key_bytes})")
    if not isinstance(entry, CrdtEntry):
        max_value = limits.max_value_bytes
        for version in entry.versions:
            if version.value is not None and len(version.value) > max_value:
                raise StateCodecError(f"entry: value of {len(version.value)} bytes "
                                      f"(limit {limits.max_value_bytes})")
    return entry


def _check_context_items(items: int) -> None:
    """A value entry's context is a flat [node, counter, ...] list: refused past MAX_CONTEXT_NODES nodes."""
    if items > 2 * MAX_CONTEXT_NODES:
        raise StateCodecError(f"entry: a context of {items // 2} writer nodes (limit {MAX_CONTEXT_NODES})")


def encode_rumor(entry: Entry) -> bytes:
    """A state rumor payload: the key's whole state, so any delivery order converges."""
    return _pack([RUMOR, entry_to_plain(entry)])


def decode_rumor(payload: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Entry:
    """One entry ([1, entry], as `encode_rumor` writes it), decoded as a pushed one is (`_decode_entry`): its
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
    if payload[3:4] != _CRDT_TAG_BYTE:  # (entry[1:2], read from the payload: no memoryview slice per rumor)
        reader = _rumor_reader(len(payload), limits)
        if reader is not None:
            return _entry(reader.plain(entry, "state rumor"), limits)
    caps = _caps(len(payload), limits)
    if entry[1:2] == _CRDT_TAG_BYTE:
        try:
            _check_entry_head(entry, caps)
            too_large = _crdt_state_too_large(entry, caps, limits)
        except StateCodecError:
            raise
        except _MSGPACK_ERRORS as err:
            raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
        if too_large:
            raise StateCodecError(f"entry: a CRDT state of more than {limits.max_value_bytes} bytes "
                                  "(max_value_bytes)")
    return _decode_entry(entry, limits, caps, "state rumor")


REUSE_READER_BYTES = 64 * 1024
"""Rumors up to this size are read by a reader kept for their size class (`_rumor_reader`); larger ones (write
concern pushes and fetch answers of big values) by a fresh one, so no reader keeps a large buffer."""
_readers = threading.local()


def _rumor_reader(size: int, limits: CodecLimits) -> _ValueEntries | None:
    """The value-entry reader for a rumor of `size` bytes decoded under `limits`, kept per thread and per size
    class (the next power of two, at least 256 bytes): a reader is an Unpacker whose buffer is allocated when it
    is made, which cost ~5 us of the ~12 us a 1 KiB rumor took to decode. Its caps are those of a fresh reader
    for a message of the class's size (`_caps`), so every bound stays within twice what the message's own size
    gives (a rumor of 1.1 kB: strings, binaries and arrays of at most 2,048). None above REUSE_READER_BYTES."""
    if size > REUSE_READER_BYTES:
        return None
    bucket = 1 << max(8, (size - 1).bit_length())
    cache: dict[int, tuple[CodecLimits, _ValueEntries]] | None = getattr(_readers, "cache", None)
    if cache is None:
        cache = _readers.cache = {}
    kept = cache.get(bucket)
    if kept is not None and kept[0] is limits:
        return kept[1]
    reader = _ValueEntries(_caps(bucket, limits), bucket)
    cache[bucket] = (limits, reader)  # (at most one per size class: 9 classes up to 64 KiB)
    return reader


def _crdt_state_too_large(entry: memoryview, caps: dict[str, Any], limits: CodecLimits) -> bool:
    """Whether `entry` is a CRDT entry whose state is longer than max_value_bytes (the store would refuse it
    once built): read from its headers, nothing built. Each caller decides what that costs the message."""
    return entry[1:2] == _CRDT_TAG_BYTE and _crdt_state_bytes(entry, caps) > limits.max_value_bytes


def _caps(size: int, limits: CodecLimits) -> dict[str, Any]:
    """msgpack's length limits for an input of `size` bytes: no string, binary, array or map longer than the
    input could hold or `limits` allow, and no extension types."""
    return {"max_str_len": min(size, limits.max_str_bytes), "max_bin_len": min(size, limits.max_bin_bytes),
            "max_array_len": min(size, limits.max_items), "max_map_len": min(size, limits.max_items),
            "max_ext_len": 0}


def encode_change(change: Change) -> bytes:
    """One append-only log record. With the entry's encoding at hand (`Change.packed`) it is not encoded again:
    the record's last field is those bytes, after the other three packed with a nil in its place (msgpack
    packs an array's items one after the other, and nil is the one byte 0xc0), byte for byte the same."""
    if change.entry is None:
        return _pack([CHANGE, change.key, change.origin, None])
    if change.packed is not None:
        return _pack([CHANGE, change.key, change.origin, None])[:-1] + change.packed
    return _pack([CHANGE, change.key, change.origin, entry_to_plain(change.entry)])


def decode_change(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Change:
    _, key, origin, entry = _decode(data, CHANGE, 4, limits, "log record")
    if not isinstance(key, str) or not isinstance(origin, str) or origin not in _ORIGINS:
        raise StateCodecError("log record: bad key or origin")
    decoded = _entry(entry, limits) if entry is not None else None
    if decoded is not None and decoded.key != key:
        raise StateCodecError("log record: key does not match its entry")
    return Change(key, decoded, origin)


def encode_refused(item: RefusedItem) -> bytes:
    """What recovery keeps aside (io/persistence `wal.rejected`) of a snapshot item `KvStore.restore` left
    out: an entry as a log record ([2, key, "restore", entry]), a graveyard item as the snapshot holds it
    ([key, context, timestamp])."""
    if item.kind == "entry":
        return _pack([CHANGE, item.key, "restore", item.plain])
    return _pack(item.plain)


def encode_context(context: CausalContext) -> bytes:
    """The opaque token a reader gets and sends back with its write (the HTTP layer base64s it)."""
    return encode_context_of(context.vv, context.timestamp)


def encode_context_of(vv: VersionVector, timestamp: hlc_mod.Hlc) -> bytes:
    """`encode_context(CausalContext(vv, timestamp))`, without building the CausalContext (every watch line
    carries one)."""
    return _pack([CONTEXT, vv.to_plain(), [timestamp.wall_ms, timestamp.logical, timestamp.node]])


def decode_context(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> CausalContext:
    _, vv, ts = _decode(data, CONTEXT, 3, limits, "causal context")
    if isinstance(vv, list):
        _check_context_items(len(vv))
    return CausalContext(_guard("context", VersionVector.from_plain, vv), _guard("context", hlc_mod.from_plain, ts))


# -- anti-entropy -----------------------------------------------------------------------------------------
def _nodes_to_plain(nodes: tuple[NodeId, ...]) -> list[int]:
    return [n for node in nodes for n in node]


def _nodes(plain: Any, what: str) -> tuple[NodeId, ...]:
    if not isinstance(plain, list) or len(plain) % 2 or not all(_uint(n) for n in plain):
        raise StateCodecError(f"{what}: expected a flat [level, index, ...] list of integers")
    return tuple((plain[i], plain[i + 1]) for i in range(0, len(plain), 2))


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _shape(value: Any) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(_uint(v) for v in value)
            and value[0] in (1, 2, 4) and 1 <= value[1] <= MAX_DEPTH):
        raise StateCodecError(f"tree shape: expected [bits 1|2|4, depth 1..{MAX_DEPTH}]")
    return value[0], value[1]


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        raise StateCodecError(f"{what}: expected a {HASH_BYTES}-byte hash")
    return value


def _entries(plain: Any, limits: CodecLimits, what: str) -> tuple[Entry, ...]:
    if not isinstance(plain, list):
        raise StateCodecError(f"{what}: expected a list of entries")
    return tuple(_entry(item, limits) for item in plain)


def encode_ae(message: AeMessage) -> bytes:
    if isinstance(message, AeRequest):
        return _pack([AE_REQUEST, list(message.shape), message.root, _nodes_to_plain(message.descend),
                      _nodes_to_plain(message.listing), [entry_to_plain(e) for e in message.push],
                      list(message.want), _nodes_to_plain(message.want_nodes)])
    return _pack([AE_RESPONSE, list(message.shape), message.root,
                  [[*c.node, c.hashes, c.counts] for c in message.children],
                  [[*item.node, item.records] for item in message.listings],
                  [entry_to_plain(e) for e in message.entries], list(message.collected), message.truncated])


def encoded_size(message: AeMessage) -> int:
    """Bytes `message` takes on the wire (the anti-entropy byte accounting)."""
    return len(encode_ae(message))


MAX_ENTRY_VERSIONS = 4096
"""Versions one decoded entry may hold. A local write keeps at most kvstore.MAX_LOCAL_SIBLINGS (64) live
values, so only concurrent writers add more; past this, an entry is refused before its versions are built
(one pushed entry of 100k versions passed the push-count bound and cost ~1.3 s of CPU per 4 MiB)."""

_PUSH_BYTES_PER_LIST = 2
"""The fewest body bytes an honest push spends per msgpack array: an OR-set element's smallest item is
[element, [[node, n]]], 3 arrays in ~7 bytes. A push decoded with more arrays than its bytes / 2 (+ a few) is
refused as it is built: nested empty arrays cost one byte of body each and ~64 bytes of memory once built."""


class _TooManyLists(Exception):
    pass


def _counting_hooks(limit: int) -> dict[str, Any]:
    """msgpack list_hook and object_hook that refuse the `limit`+1-th array or map as soon as it is built
    (inner ones first)."""
    built = 0

    def count(items: Any) -> Any:
        nonlocal built
        built += 1
        if built > limit:
            raise _TooManyLists
        return items
    return {"list_hook": count, "object_hook": count}


def _fields(data: bytes, limits: CodecLimits, what: str, tag: int) -> list[memoryview]:
    """The 8 fields of an anti-entropy message as views of `data`, found by msgpack's skip (which builds
    nothing): each is then decoded with bounds of its own, so nested arrays in a field meant to be flat cost
    two arrays, not millions."""
    if len(data) > limits.max_message_bytes:
        raise StateCodecError(f"message of {len(data)} bytes exceeds the {limits.max_message_bytes} byte cap")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(data)), **_caps(len(data), limits))
    unpacker.feed(data)
    view = memoryview(data)
    fields = []
    try:
        if unpacker.read_array_header() != 8:
            raise StateCodecError(f"not an {what} (format tag {tag}, 8 fields)")
        for _ in range(8):
            start = unpacker.tell()
            unpacker.skip()
            fields.append(view[start:unpacker.tell()])  # (a view: no copy of the body)
        if unpacker.tell() != len(data):
            raise StateCodecError(f"{what}: trailing bytes")
    except StateCodecError:
        raise
    except _MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
    return fields


def _unpack_field(data: bytes | memoryview, limits: CodecLimits, max_lists: int, what: str,
                  max_len: int | None = None) -> Any:
    """One field, refused as soon as it builds more than `max_lists` arrays and maps, or (`max_len`) an array
    or map longer than that (refused at its header, before its items are built)."""
    most = min(len(data), limits.max_items, len(data) if max_len is None else max_len)
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, **_counting_hooks(max_lists),
            max_str_len=min(len(data), limits.max_str_bytes), max_bin_len=min(len(data), limits.max_bin_bytes),
            max_array_len=most, max_map_len=most, max_ext_len=0)
    except _TooManyLists:
        raise StateCodecError(f"{what}: more nested arrays or maps than the field can hold") from None
    except _MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None


_PROTOCOL = Limits()
_FLAT_FIELD_ITEMS: dict[int, int] = {
    0: 0, 1: 2, 2: 0, 3: 2 * _PROTOCOL.max_nodes, 4: 2 * _PROTOCOL.max_nodes, 6: _PROTOCOL.max_want,
    7: 2 * _PROTOCOL.max_nodes}
"""Most items a request's flat field may hold (by field position: tag and root none, shape, the node lists
as flat [level, index, ...] integers, want), as `anti_entropy.check_request` allows them: refused at the
array's header. Built first and checked after, 1M-item node lists cost ~40 bytes of memory per body byte and
~2 s for 3 MiB (review)."""


def _pushed_entries(data: bytes | memoryview, limits: CodecLimits) -> PushedEntries:
    """The push field split into its entries' bytes by msgpack's skip (which builds nothing; one C call per
    entry): each entry is an array of 4 with a one-byte tag, and a value entry's versions are counted at their
    array's header (refused past MAX_ENTRY_VERSIONS). Entries are decoded one at a time when merged
    (`PushedEntries`, `_decode_entry`): a value entry built in its fixed shape, a CRDT entry field by field,
    only its state bounded by one array per `_PUSH_BYTES_PER_LIST` of its bytes."""
    caps = _caps(len(data), limits)
    walker = msgpack.Unpacker(io.BytesIO(data), raw=False, max_buffer_size=max(1, len(data)), **caps)
    view = memoryview(data)
    bounds = [0]
    try:
        count = walker.read_array_header()
        bounds[0] = walker.tell()
        for _ in range(count):
            walker.skip()
            _check_entry_head(view[bounds[-1]:walker.tell()], caps)
            bounds.append(walker.tell())
        if walker.tell() != len(data):
            raise StateCodecError("push: trailing bytes")
    except StateCodecError:
        raise
    except _MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None

    values = _ValueEntries(caps, len(data))

    def decode(raw: memoryview) -> Entry:
        if _crdt_state_too_large(raw, caps, limits):
            # The store refuses a CRDT state above max_value_bytes once built (kvstore.validate); one of 300k
            # tiny elements in a 3.6 MiB push took seconds and ~175 MiB to build and merge in one step.
            raise InvalidEntry(f"CRDT state of more than {limits.max_value_bytes} bytes (max_value_bytes)")
        return _decode_entry(raw, limits, caps, "push", values)
    return PushedEntries(data, bounds, decode)


def _check_entry_head(entry: memoryview, caps: dict[str, Any]) -> None:
    """An entry's shape read from its headers (nothing built): [tag 0|1, key, context|timestamp, versions|value],
    and a value entry's context nodes (MAX_CONTEXT_NODES) and version count."""
    peek = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(entry)), **caps)
    peek.feed(entry)
    if peek.read_array_header() != 4:
        raise StateCodecError("entry: an entry is [tag, key, ...] (4 fields)")
    tag = entry[peek.tell():peek.tell() + 1]
    if tag not in (_VALUE_TAG_BYTE, _CRDT_TAG_BYTE):
        raise StateCodecError("entry: an entry's tag is 0 (value) or 1 (CRDT)")
    if tag == _VALUE_TAG_BYTE:
        for _ in range(2):  # tag, key
            peek.skip()
        context = peek.read_array_header()
        _check_context_items(context)
        for _ in range(context):
            peek.skip()
        versions = peek.read_array_header()
        if versions > MAX_ENTRY_VERSIONS:
            raise StateCodecError(f"entry: {versions} versions (limit {MAX_ENTRY_VERSIONS})")


def _decode_entry(raw: memoryview, limits: CodecLimits, caps: dict[str, Any], what: str,
                  values: _ValueEntries | None = None) -> Entry:
    """One entry whose head passed `_check_entry_head` (a value entry's is read again here). A value entry has a
    fixed shape, [0, key, flat context, versions of 5 scalars], so each part is built with exactly that many
    arrays (`_ValueEntries`, or `values`: one reused over a message's entries): nested arrays or long lists
    where a scalar belongs are refused as soon as the first is built. A CRDT entry (its state bounded by
    max_value_bytes before this) is read field by field (`_crdt_plain`)."""
    if raw[1:2] == _CRDT_TAG_BYTE:
        plain = _crdt_plain(raw, limits, caps, what)
    else:
        plain = (values or _ValueEntries(caps, len(raw))).plain(raw, what)
    return _entry(plain, limits)


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
    except _MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
    if bounds[-1] != len(raw):
        raise StateCodecError(f"{what}: trailing bytes after a CRDT entry")
    tag, key, timestamp, state = (raw[bounds[i]:bounds[i + 1]] for i in range(4))
    return [_unpack_field(tag, limits, 0, what), _unpack_field(key, limits, 0, what),
            _unpack_field(timestamp, limits, 1, what, 3),
            _unpack_field(state, limits, len(state) // _PUSH_BYTES_PER_LIST + 64, what)]


class _ShapeError(Exception):
    pass


_VALUE_ENTRY_MAX_ARRAY = max(2 * MAX_CONTEXT_NODES, MAX_ENTRY_VERSIONS)
"""The longest array a value entry holds (its flat context): one out of place is built at most this long."""


class _ValueEntries:
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
            _check_context_items(items)
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
            if isinstance(err, _MSGPACK_ERRORS):
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


_RUMOR_HEAD = bytes([0x92, RUMOR])  # [RUMOR, entry]: a fixarray of 2, the tag a positive fixint
_VALUE_TAG_BYTE = b"\x00"  # kvstore's value and CRDT entry tags, as the positive fixints an encoder writes
_CRDT_TAG_BYTE = b"\x01"


def decode_ae_request(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> AeRequest:
    """Field by field (`_fields`): every field but `push` is flat (one array, no maps), and `push`
    is kept as its entries' bytes (`_pushed_entries`), each decoded when it is merged; whatever the body
    holds, what decoding builds stays in proportion to it, and an entry's versions are counted before they
    are built."""
    fields = _fields(data, limits, "anti-entropy request", AE_REQUEST)
    flat = [_unpack_field(f, limits, 1, "anti-entropy request", _FLAT_FIELD_ITEMS[k])
            for k, f in enumerate(fields) if k != 5]
    if flat[0] != AE_REQUEST or isinstance(flat[0], bool):
        raise StateCodecError("not an anti-entropy request (format tag 3, 8 fields)")
    shape, root, descend, listing, want, want_nodes = flat[1:]
    push = _pushed_entries(fields[5], limits)
    if root is not None:
        root = _hash(root, "root")
    if not isinstance(want, list) or not all(isinstance(w, bytes) and len(w) == KEY_ID_BYTES for w in want):
        raise StateCodecError(f"want: expected {KEY_ID_BYTES}-byte key ids")
    return AeRequest(_shape(shape), root, _nodes(descend, "descend"), _nodes(listing, "listing"),
                     push, tuple(want), _nodes(want_nodes, "want_nodes"))


_TAG_BYTE = bytes([AE_REQUEST])  # (a positive fixint is its own byte)


def ae_request_push_count(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> int:
    """How many entries an anti-entropy request pushes, read from the push array's header without decoding
    the request (the fields before it are skipped, nothing is built): the responder refuses an oversized
    push before it pays for decoding it (~15 us per entry)."""
    if len(data) > limits.max_message_bytes:
        raise StateCodecError(f"message of {len(data)} bytes exceeds the {limits.max_message_bytes} byte cap")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(data)), max_ext_len=0)
    unpacker.feed(data)
    try:
        # The tag is looked at as a byte, never decoded: decoding it built whatever it held (a tag of 4M
        # nested empty arrays built ~263 MiB before this refusal, review).
        if unpacker.read_array_header() != 8 or data[unpacker.tell():unpacker.tell() + 1] != _TAG_BYTE:
            raise StateCodecError("not an anti-entropy request (format tag 3, 8 fields)")
        for _ in range(5):  # tag, shape, root, descend, listing
            unpacker.skip()
        count: int = unpacker.read_array_header()
    except StateCodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
    return count


MIN_ENTRY_BYTES = 6
"""The fewest bytes an encoded entry takes ([tag, key of one character, context, versions]): an answer whose
entries array header counts more entries than its bytes could hold is refused before any is decoded."""

_CHILD_FIELDS = 4    # [level, index, hashes, counts]
_LISTING_FIELDS = 3  # [level, index, records]
# The fewest bytes one of each takes (array header, level, index, bin headers, a fanout of 2 hashes and counts;
# an empty listing): a header counting more than the field could hold is refused before anything is built.
_MIN_CHILD_BYTES = 3 + 2 + 2 * HASH_BYTES + 2 + 2
_MIN_LISTING_BYTES = 3 + 2


def _array_count(field: bytes | memoryview, what: str) -> int:
    """The length in a field's array header, read without decoding the array."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(field)), max_ext_len=0)
    unpacker.feed(field)
    try:
        count: int = unpacker.read_array_header()
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise StateCodecError(f"{what}: expected a list ({type(err).__name__})") from None
    return count


class AnswerEntries:
    """The entries of an anti-entropy answer, decoded on demand (`take`), each exactly as a pushed entry is
    (`decode_ae_request`): found by msgpack's skip, its head read before anything is built, a CRDT state
    longer than `max_value_bytes` skipped unbuilt (the store would refuse it), and the rest built in its
    entry's shape (`_decode_entry`). The driver merges a chunk, yields to its event loop, takes the next
    (core/anti_entropy.AnswerMerge); a chunk stops at `MERGE_CHUNK_BYTES` of entries (and one more).
    Before: the entries were unpacked with only "one array per 2 bytes" for the whole field, so one entry
    whose key held 4M empty arrays built 133 MiB and took ~2 s in one step."""

    def __init__(self, field: bytes | memoryview, count: int, limits: CodecLimits) -> None:
        self.limits = limits
        self.skipped = 0  # CRDT entries over max_value_bytes, left unbuilt
        self._view = memoryview(field)
        self._caps = _caps(len(field), limits)
        self._walker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(field)), **self._caps)
        self._walker.feed(field)
        self._values = _ValueEntries(self._caps, len(field))
        self._remaining = count
        self._walker.read_array_header()  # (read once already: `open_ae_response`)

    @property
    def remaining(self) -> int:
        return self._remaining

    def take(self, count: int, max_bytes: int = MERGE_CHUNK_BYTES) -> list[Entry]:
        """Up to `count` more entries, stopping once they took `max_bytes` on the wire; StateCodecError at
        the first malformed one (none are left then)."""
        out: list[Entry] = []
        walker, view, caps, limits = self._walker, self._view, self._caps, self.limits
        spent = 0
        try:
            while self._remaining > 0 and len(out) < count and spent < max_bytes:
                start = walker.tell()
                walker.skip()
                entry = view[start:walker.tell()]
                self._remaining -= 1
                if entry[1:2] == _CRDT_TAG_BYTE:  # (a value entry's head is read by `_decode_entry`)
                    _check_entry_head(entry, caps)
                    if _crdt_state_too_large(entry, caps, limits):
                        self.skipped += 1  # (skipped in C, not counted in the chunk's bytes)
                        continue
                spent += len(entry)
                out.append(_decode_entry(entry, limits, caps, "entries", self._values))
            if self._remaining == 0 and walker.tell() != len(view):
                raise StateCodecError("entries: trailing bytes")
        except StateCodecError:
            self._remaining = 0
            raise
        except _MSGPACK_ERRORS as err:
            self._remaining = 0
            raise StateCodecError(f"entries: malformed msgpack: {type(err).__name__}: {err}") from None
        return out


def open_ae_response(data: bytes, limits: CodecLimits = DEFAULT_LIMITS, *, asked: AeRequest | None = None,
                     max_entries: int = 1 << 16, max_records: int = 1 << 16) -> tuple[AeResponse, AnswerEntries]:
    """An anti-entropy answer opened the way a request is (`_fields`: msgpack's skip finds the fields,
    building nothing), every count read from its array header and checked before that field is decoded:
    children at most one per node `asked` to descend (plus the root's when it sent its root), listings at
    most one per node it asked to list, collected keys at most as many as it pushed, entries at most
    `max_entries` and no more than the field's bytes could hold, listing records at most `max_records` in
    all. Returns the answer without its entries, and the entries to decode a chunk at a time. Whatever the
    bytes, the only exception is StateCodecError; what is built stays in proportion to what was asked."""
    fields = _fields(data, limits, "anti-entropy response", AE_RESPONSE)
    tag, shape, root, truncated = (_unpack_field(fields[k], limits, 1, "anti-entropy response") for k in (0, 1, 2, 7))
    if tag != AE_RESPONSE or isinstance(tag, bool):
        raise StateCodecError("not an anti-entropy response (format tag 4, 8 fields)")
    counts = (_array_count(fields[3], "children"), _array_count(fields[4], "listings"),
              _array_count(fields[6], "collected"))
    excess = None if asked is None else answer_excess(asked, counts)
    if excess is not None:
        raise StateCodecError(f"anti-entropy response: {excess}")
    for name, count, field, least in (("children", counts[0], fields[3], _MIN_CHILD_BYTES),
                                      ("listings", counts[1], fields[4], _MIN_LISTING_BYTES)):
        if count * least > len(field):
            raise StateCodecError(f"anti-entropy response: {count} {name} in {len(field)} bytes")
    children = _unpack_field(fields[3], limits, 1 + counts[0], "children")
    listings = _unpack_field(fields[4], limits, 1 + counts[1], "listings")
    collected = _unpack_field(fields[6], limits, 1, "collected")
    if not isinstance(children, list) or not isinstance(listings, list):
        raise StateCodecError("children/listings: expected lists")
    out_children = []
    for item in children:
        if not (isinstance(item, list) and len(item) == _CHILD_FIELDS and isinstance(item[2], bytes)
                and isinstance(item[3], bytes) and len(item[2]) == len(item[3]) * HASH_BYTES
                and 2 <= len(item[3]) <= MAX_FANOUT):
            raise StateCodecError(f"children: expected [level, index, fanout x {HASH_BYTES} bytes, fanout counts]")
        (node,) = _nodes(item[:2], "children")
        out_children.append(Children(node, item[2], item[3]))
    out_listings = []
    records = 0
    for item in listings:
        if not (isinstance(item, list) and len(item) == _LISTING_FIELDS and isinstance(item[2], bytes)
                and len(item[2]) % RECORD_BYTES == 0):
            raise StateCodecError(f"listings: expected [level, index, n x {RECORD_BYTES} bytes]")
        records += len(item[2]) // RECORD_BYTES
        if records > max_records:
            raise StateCodecError(f"listings: more than {max_records} records")
        (node,) = _nodes(item[:2], "listings")
        out_listings.append(Listing(node, item[2]))
    if not isinstance(collected, list) or not all(isinstance(k, str) for k in collected):
        raise StateCodecError("collected: expected a list of keys")
    if not isinstance(truncated, bool):
        raise StateCodecError("truncated: expected a boolean")
    entries = _array_count(fields[5], "entries")
    if entries > max_entries or entries * MIN_ENTRY_BYTES > len(fields[5]):
        raise StateCodecError(f"anti-entropy response: {entries} entries in {len(fields[5])} bytes "
                              f"(at most {max_entries}, of {MIN_ENTRY_BYTES} bytes or more each)")
    head = AeResponse(_shape(shape), None if root is None else _hash(root, "root"), tuple(out_children),
                      tuple(out_listings), (), tuple(collected), truncated)
    return head, AnswerEntries(fields[5], entries, limits)


def decode_ae_response(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> AeResponse:
    """A whole answer at once (the simulator, tests): `open_ae_response` without what was asked, then every
    entry."""
    head, entries = open_ae_response(data, limits)
    out: list[Entry] = []
    while entries.remaining:
        out += entries.take(entries.remaining)
    return replace(head, entries=tuple(out))
