"""Wire encoding of anti-entropy messages: requests and answers, each opened field by field within bounds.

Why a separate module: an anti-entropy body is the largest thing a peer sends (up to the message cap), so
it is never unpacked whole. Its 8 fields are found by msgpack's skip, which builds nothing (`_fields`);
every flat field is decoded with a bound of its own, a request's pushed entries are kept as their bytes and
decoded one at a time when merged (`PushedEntries`), and an answer's entries a chunk at a time
(`AnswerEntries`), each in its own shape (`entry_decoding`). Whatever the body holds, what decoding builds
stays in proportion to what was asked; the only exception is `StateCodecError` (`codec_limits`).

Formats (msgpack arrays, first element a format tag; tags 1, 2 and 5 are `state_codec`'s):
- anti-entropy request: [3, [bits, depth], root or nil, descend, listing, push, want, want_nodes]
- anti-entropy response: [4, [bits, depth], root or nil, children, listings, entries, collected, truncated]
Node lists are flat [level, index, level, index, ...]; entries use `kvstore.entry_to_plain`.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import msgpack

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
from gossip_agent.core.codec_limits import (
    DEFAULT_LIMITS,
    MSGPACK_ERRORS,
    CodecLimits,
    StateCodecError,
    msgpack_caps,
    unpack_field,
)
from gossip_agent.core.entry_decoding import (
    CRDT_TAG_BYTE,
    EntryOverLimit,
    ValueEntries,
    check_crdt_state,
    check_entry_head,
    decode_entry,
)
from gossip_agent.core.kvstore import Entry, entry_to_plain
from gossip_agent.core.merkle import HASH_BYTES, MAX_DEPTH, MAX_FANOUT
from gossip_agent.core.packing import pack

AE_REQUEST = 3
AE_RESPONSE = 4


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


def encode_ae(message: AeMessage) -> bytes:
    if isinstance(message, AeRequest):
        return pack([AE_REQUEST, list(message.shape), message.root, _nodes_to_plain(message.descend),
                     _nodes_to_plain(message.listing), [entry_to_plain(e) for e in message.push],
                     list(message.want), _nodes_to_plain(message.want_nodes)])
    return pack([AE_RESPONSE, list(message.shape), message.root,
                 [[*c.node, c.hashes, c.counts] for c in message.children],
                 [[*item.node, item.records] for item in message.listings],
                 [entry_to_plain(e) for e in message.entries], list(message.collected), message.truncated])


def encoded_size(message: AeMessage) -> int:
    """Bytes `message` takes on the wire (the anti-entropy byte accounting)."""
    return len(encode_ae(message))


def _fields(data: bytes, limits: CodecLimits, what: str, tag: int) -> list[memoryview]:
    """The 8 fields of an anti-entropy message as views of `data`, found by msgpack's skip (which builds
    nothing): each is then decoded with bounds of its own, so nested arrays in a field meant to be flat cost
    two arrays, not millions."""
    if len(data) > limits.max_message_bytes:
        raise StateCodecError(f"message of {len(data)} bytes exceeds the {limits.max_message_bytes} byte cap")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(data)), **msgpack_caps(len(data), limits))
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
    except MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
    return fields


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
    (`PushedEntries`, `decode_entry`): a value entry built in its fixed shape, a CRDT entry field by field,
    only its state bounded by one array per two of its bytes (`entry_decoding`)."""
    caps = msgpack_caps(len(data), limits)
    walker = msgpack.Unpacker(io.BytesIO(data), raw=False, max_buffer_size=max(1, len(data)), **caps)
    view = memoryview(data)
    bounds = [0]
    try:
        count = walker.read_array_header()
        bounds[0] = walker.tell()
        for _ in range(count):
            walker.skip()
            check_entry_head(view[bounds[-1]:walker.tell()], caps)
            bounds.append(walker.tell())
        if walker.tell() != len(data):
            raise StateCodecError("push: trailing bytes")
    except StateCodecError:
        raise
    except MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None

    values = ValueEntries(caps, len(data))

    def decode(raw: memoryview) -> Entry:
        # The store refuses a CRDT state above its ceiling once built (kvstore.validate); one of 300k tiny
        # elements in a 3.6 MiB push took seconds and ~175 MiB to build and merge in one step.
        check_crdt_state(raw, caps, limits)
        return decode_entry(raw, limits, caps, "push", values)
    return PushedEntries(data, bounds, decode)


def decode_ae_request(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> AeRequest:
    """Field by field (`_fields`): every field but `push` is flat (one array, no maps), and `push`
    is kept as its entries' bytes (`_pushed_entries`), each decoded when it is merged; whatever the body
    holds, what decoding builds stays in proportion to it, and an entry's versions are counted before they
    are built."""
    fields = _fields(data, limits, "anti-entropy request", AE_REQUEST)
    flat = [unpack_field(f, limits, 1, "anti-entropy request", _FLAT_FIELD_ITEMS[k])
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
    longer than `max_crdt_bytes` skipped unbuilt (the store would refuse it) and one whose key, value or
    counters are over the decoder's ceilings skipped, each counted in `refused` by reason (the rest of the
    answer still applies), and the rest built in its entry's shape (`decode_entry`). The driver merges a chunk, yields
    to its event loop, takes the next (core/anti_entropy.AnswerMerge); a chunk stops at `MERGE_CHUNK_BYTES`
    of entries (and one more).
    Before: the entries were unpacked with only "one array per 2 bytes" for the whole field, so one entry
    whose key held 4M empty arrays built 133 MiB and took ~2 s in one step."""

    def __init__(self, field: bytes | memoryview, count: int, limits: CodecLimits) -> None:
        self.limits = limits
        self.refused: dict[str, int] = {}  # reason -> entries skipped as over a ceiling (EntryOverLimit)
        self._view = memoryview(field)
        self._caps = msgpack_caps(len(field), limits)
        self._walker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(field)), **self._caps)
        self._walker.feed(field)
        self._values = ValueEntries(self._caps, len(field))
        self._remaining = count
        self._walker.read_array_header()  # (read once already: `open_ae_response`)

    @property
    def remaining(self) -> int:
        return self._remaining

    @property
    def skipped(self) -> int:
        """Entries skipped so far as over a ceiling (`refused`, all reasons)."""
        return sum(self.refused.values())

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
                try:
                    if entry[1:2] == CRDT_TAG_BYTE:  # (a value entry's head is read by `decode_entry`)
                        check_entry_head(entry, caps)
                        check_crdt_state(entry, caps, limits)  # (skipped in C, not counted in the chunk's bytes)
                    spent += len(entry)
                    out.append(decode_entry(entry, limits, caps, "entries", self._values))
                except EntryOverLimit as err:
                    self.refused[err.reason] = self.refused.get(err.reason, 0) + 1
            if self._remaining == 0 and walker.tell() != len(view):
                raise StateCodecError("entries: trailing bytes")
        except StateCodecError:
            self._remaining = 0
            raise
        except MSGPACK_ERRORS as err:
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
    tag, shape, root, truncated = (unpack_field(fields[k], limits, 1, "anti-entropy response") for k in (0, 1, 2, 7))
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
    children = unpack_field(fields[3], limits, 1 + counts[0], "children")
    listings = unpack_field(fields[4], limits, 1 + counts[1], "listings")
    collected = unpack_field(fields[6], limits, 1, "collected")
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

