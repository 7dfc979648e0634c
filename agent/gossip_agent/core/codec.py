"""Wire codec: packets and push-pull states to bytes and back (msgpack, versioned, compact).

Rules of this module:
- A packet is `VERSION` (one byte) followed by one msgpack array `[sender, [message, ...]]`; a message is an
  array whose first item is its type as a small int (`MessageType`) and whose other items are its fields in
  declaration order, addresses flattened to `host, port`. No field names travel: a ping is ~30 bytes.
- `decode_*` raise `DecodeError(reason)` on *any* bad input (truncated, unknown version or type, wrong field
  types or ranges, oversized) and never another exception, so the transport can drop and count garbage.
  Sizes are checked before msgpack allocates anything (the Unpacker's `max_*_len` limits).
- `message_size(m)` is exactly the bytes `m` adds inside a packet's message array; `packet_overhead(sender)`
  is an upper bound for everything else, including room for the security layer's envelope
  (`ENVELOPE_RESERVE`), so a packet packed to `gossip.mtu` still fits the MTU once encrypted.
- The first byte also frames: plaintext packets start with `VERSION` (0x01); the security layer's encrypted
  envelopes start with a byte >= 0x80, so a receiver tells them apart without trying to parse.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import msgpack

from gossip_agent.core import packing
from gossip_agent.core.digests import MAX_HLC_MS, MAX_KEYS, MAX_SEQ, MAX_SUMMARY_BUCKETS, ROOT_PREFIX_BYTES
from gossip_agent.core.hosts import wire_host
from gossip_agent.core.messages import (
    UNKNOWN_ADDR,
    Ack,
    Alive,
    Dead,
    Digest,
    DigestSummary,
    Graft,
    IHave,
    MemberSnapshot,
    MemberState,
    Message,
    Nack,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    PingReq,
    Prune,
    PullRequest,
    PushPullState,
    ShortIds,
    ShortKind,
    StateRumor,
    Suspect,
)
from gossip_agent.core.plumtree import ID_BYTES, MAX_IDS_PER_MESSAGE, SHORT_ID_BYTES
from gossip_agent.core.text import first_control_char
from gossip_agent.core.vivaldi import VivaldiConfig

VERSION = 0x01
"""First byte of a plaintext packet or stream body (wire format version 1)."""
PUSH_PULL_VERSION = 0x01
PUSH_PULL_ZLIB = 0x02
_COMPRESS_OVER = 512
# Largest UDP payload over IPv4; nothing bigger can arrive, so nothing bigger is decoded as a packet.
MAX_PACKET_BYTES = 65_507
# The security layer's envelope: frame byte + 12-byte nonce + 16-byte AES-GCM tag + 6-byte replay stamp
# (io/security.py checks it).
ENVELOPE_RESERVE = 35
# The message array's header: msgpack array16 (3 bytes) covers up to 65535 messages, more than an MTU holds.
_ARRAY_HEADER_MAX = 3
_MAX_NAME_BYTES = 256
_MAX_U32 = 0xFFFF_FFFF
MAX_INCARNATION = (1 << 63) - 1
"""Largest incarnation accepted (and ever produced: a refutation saturates here). Anything above, up to the
u64 a packet can carry, is a counted drop (`out_of_range`): 2^64-1 used to make the refutation overflow
msgpack and break every push-pull of the victim for good."""
COORDINATE_DIMENSIONS = VivaldiConfig().dimensions
"""A coordinate on the wire is `[14, bytes]`: the vector, height, error and adjustment as little-endian
float32 (4 * (dimensions + 3) = 44 bytes, ~48 with its framing, half of msgpack's float64s; float32 keeps
~7 digits, far finer than any RTT measured in seconds). A body of any other length is malformed."""
_COORDINATE = struct.Struct(f"<{COORDINATE_DIMENSIONS + 3}f")
_COMPACT_COORDINATE = struct.Struct(f"<{COORDINATE_DIMENSIONS + 3}e")
"""The compact form (types 20 and 21, `NetCoordinate.compact`): the same values as IEEE half floats, 22 bytes
(~26 with framing). Half floats keep 11 significant bits: a step of 1/2048 of the value (0.06 us near 0.1 ms,
15 us near 25 ms, 0.12 ms near 150 ms), far below Vivaldi's own error (5-45 % in our simulations); magnitudes
are bounded at 100 s (`VivaldiConfig.max_magnitude`), inside their range. Only to members that read it
(core/readers.py COMPACT): an older agent drops a whole packet holding a type it does not know."""
HALF_MAX = 65504.0
"""Largest finite half float: values beyond are clamped there when packed (a checked coordinate never is)."""
MAX_PEER_COORDINATE_ROWS = 16
"""Rows in one second-hand coordinates message (`[18, [[name, coordinate bytes, age in 0.1 s], ...]]`, about
60 bytes a row): more is malformed."""
MAX_COORDINATE_AGE = 0xFFFF / 10
"""Oldest age a second-hand coordinate carries (seconds; older ones travel at this age)."""


class MessageType(IntEnum):
    PING = 0
    ACK = 1
    NACK = 2
    PING_REQ = 3
    ALIVE = 4
    SUSPECT = 5
    DEAD = 6
    STATE = 7
    PULL = 8
    DIGEST = 9
    IHAVE = 10
    GRAFT = 11
    PRUNE = 12
    STATE_CRITICAL = 13  # a StateRumor with critical=True: same body as STATE
    COORDINATE = 14
    PEER_COORDINATES = 18
    SHORT_IDS = 19  # [19, kind, ids as 4-byte big-endian prefixes] (messages.ShortIds)
    COMPACT_COORDINATE = 20  # [20, 22 bytes]: a NetCoordinate with compact=True (half floats)
    COMPACT_PEER_COORDINATES = 21  # [21, rows]: PeerCoordinates with compact=True (half-float coordinates)
    COMPACT_PING = 22  # [22, seq, target]: a Ping with compact=True (its source: the packet's sender)


class DecodeError(ValueError):
    """Bytes that are not a valid packet or stream body; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# -- encoding ------------------------------------------------------------------------------------------

def _message_tuple(m: Message) -> tuple[Any, ...]:
    """A message as the msgpack array it is on the wire. One dict lookup by exact type (messages are final
    dataclasses): a chain of isinstance checks walked 8 of them for a state rumor and 16 for short ids, the
    two commonest messages under writes."""
    encode = _ENCODERS.get(type(m))
    if encode is None:
        raise TypeError(f"not a message: {m!r}")
    return encode(m)


def _ping(m: Ping) -> tuple[Any, ...]:
    if m.compact:
        return (MessageType.COMPACT_PING, m.seq, m.target)
    return (MessageType.PING, m.seq, m.target, m.source, m.source_addr[0], m.source_addr[1])


def _ack(m: Ack) -> tuple[Any, ...]:
    return (MessageType.ACK, m.seq, m.digest)


def _alive(m: Alive) -> tuple[Any, ...]:
    return (MessageType.ALIVE, m.name, m.incarnation, m.addr[0], m.addr[1], dict(m.meta))


def _suspect(m: Suspect) -> tuple[Any, ...]:
    return (MessageType.SUSPECT, m.name, m.incarnation, m.sender)


def _dead(m: Dead) -> tuple[Any, ...]:
    return (MessageType.DEAD, m.name, m.incarnation, m.sender)


def _nack(m: Nack) -> tuple[Any, ...]:
    return (MessageType.NACK, m.seq)


def _ping_req(m: PingReq) -> tuple[Any, ...]:
    return (MessageType.PING_REQ, m.seq, m.target, m.target_addr[0], m.target_addr[1], m.source,
            m.source_addr[0], m.source_addr[1], m.want_nack)


def _state(m: StateRumor) -> tuple[Any, ...]:
    return (MessageType.STATE_CRITICAL if m.critical else MessageType.STATE, bytes(m.payload))


def _pull(m: PullRequest) -> tuple[Any, ...]:
    return (MessageType.PULL, m.source, m.source_addr[0], m.source_addr[1])


def _digest(m: Digest) -> tuple[Any, ...]:
    # The HLC as its lag behind the sequence number (the wall ms at publication): a few bytes, not nine.
    return (MessageType.DIGEST, m.name, m.seq, bytes(m.root), m.keys, m.seq - m.hlc_ms)


def _digest_summary_tuple(m: DigestSummary) -> tuple[Any, ...]:
    return (MessageType.DIGEST, bytes(m.buckets), m.reply)


def _half(x: float) -> float:
    return HALF_MAX if x > HALF_MAX else -HALF_MAX if x < -HALF_MAX else x


def _coordinate_bytes(c: NetCoordinate, compact: bool) -> bytes:
    if compact:
        return _COMPACT_COORDINATE.pack(*map(_half, (*c.vec, c.height, c.error, c.adjustment)))
    return _COORDINATE.pack(*c.vec, c.height, c.error, c.adjustment)


def _coordinate_tuple(m: NetCoordinate) -> tuple[Any, ...]:
    kind = MessageType.COMPACT_COORDINATE if m.compact else MessageType.COORDINATE
    return (kind, _coordinate_bytes(m, m.compact))


def _peer_coordinates_tuple(m: PeerCoordinates) -> tuple[Any, ...]:
    compact = m.compact
    return (MessageType.COMPACT_PEER_COORDINATES if compact else MessageType.PEER_COORDINATES, [
        [name, _coordinate_bytes(c, compact), min(0xFFFF, max(0, round(age * 10)))] for name, c, age in m.rows])


def half_rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    """`values` as the compact form carries them (half floats, widened back): what a receiver decodes."""
    n = len(values)
    return struct.unpack(f"<{n}e", struct.pack(f"<{n}e", *map(_half, values)))


def _ihave(m: IHave) -> tuple[Any, ...]:
    return (MessageType.IHAVE, _pack_ids(m.ids))


def _graft(m: Graft) -> tuple[Any, ...]:
    return (MessageType.GRAFT, _pack_ids(m.ids))


def _prune(m: Prune) -> tuple[Any, ...]:
    return (MessageType.PRUNE,)


def _short_ids_tuple(m: ShortIds) -> tuple[Any, ...]:
    return (MessageType.SHORT_IDS, m.kind, _join_ids(m.ids, SHORT_ID_BYTES))


_ENCODERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    Ping: _ping, Ack: _ack, Alive: _alive, Suspect: _suspect, Dead: _dead, Nack: _nack, PingReq: _ping_req,
    StateRumor: _state, PullRequest: _pull, Digest: _digest, DigestSummary: _digest_summary_tuple,
    NetCoordinate: _coordinate_tuple, PeerCoordinates: _peer_coordinates_tuple, IHave: _ihave, Graft: _graft,
    Prune: _prune, ShortIds: _short_ids_tuple,
}


_TYPE_OF: dict[type, MessageType] = {
    Ping: MessageType.PING, Ack: MessageType.ACK, Nack: MessageType.NACK, PingReq: MessageType.PING_REQ,
    Alive: MessageType.ALIVE, Suspect: MessageType.SUSPECT, Dead: MessageType.DEAD, StateRumor: MessageType.STATE,
    PullRequest: MessageType.PULL, Digest: MessageType.DIGEST, DigestSummary: MessageType.DIGEST,
    NetCoordinate: MessageType.COORDINATE, IHave: MessageType.IHAVE, Graft: MessageType.GRAFT,
    Prune: MessageType.PRUNE, PeerCoordinates: MessageType.PEER_COORDINATES, ShortIds: MessageType.SHORT_IDS,
}
_LABEL_OF = {cls: t.name.lower() for cls, t in _TYPE_OF.items()}
SHORT_LABELS = {int(k): f"short_{k.name.lower()}" for k in ShortKind}
"""Metrics labels of type 19 by kind (a pull request and an announcement are different traffic)."""


def message_type(m: Message) -> MessageType:
    """The wire type of a message."""
    if isinstance(m, StateRumor) and m.critical:
        return MessageType.STATE_CRITICAL
    if type(m) is Ping and m.compact:
        return MessageType.COMPACT_PING
    if isinstance(m, NetCoordinate | PeerCoordinates) and m.compact:
        return MessageType.COMPACT_COORDINATE if type(m) is NetCoordinate else MessageType.COMPACT_PEER_COORDINATES
    return _TYPE_OF[type(m)]


def message_label(m: Message) -> str:
    """The metrics label of a message's type ("ping", "alive", ...): a dict lookup, for hot paths. Type 19 is
    labelled by kind (`SHORT_LABELS`, "short_ids" for a kind this release does not know)."""
    if type(m) is ShortIds:
        return SHORT_LABELS.get(m.kind, "short_ids")
    return _LABEL_OF[type(m)]


_packer = msgpack.Packer(use_bin_type=True, buf_size=packing.START_BUFFER_BYTES)  # starts small: packing.py says why


def _pack_ids(ids: tuple[int, ...]) -> bytes:
    """Tree ids on the wire: one bin of ID_BYTES big-endian bytes each (8 B an id, 2 B of header)."""
    return _join_ids(ids, ID_BYTES)


_ID_CODES = {4: "I", 8: "Q"}  # struct's unsigned big-endian codes by id width


@functools.lru_cache(maxsize=4 * MAX_IDS_PER_MESSAGE)
def _id_struct(width: int, count: int) -> struct.Struct:
    return struct.Struct(f">{count}{_ID_CODES[width]}")


def _join_ids(ids: tuple[int, ...], width: int) -> bytes:
    """`ids` as `width`-byte big-endian unsigned integers, back to back: one C call for the lot (an id at a time
    in Python, a 128-id pull request took ~20 µs to encode and ~30 µs to decode). An id out of range raises
    OverflowError, as `int.to_bytes` did."""
    try:
        return _id_struct(width, len(ids)).pack(*ids)
    except struct.error as exc:
        raise OverflowError(f"an id does not fit {width} bytes: {exc}") from None


def _split_ids(v: bytes, width: int) -> tuple[int, ...]:
    """Inverse of `_join_ids` (the caller checked that len(v) is a multiple of `width`, and bounded it)."""
    return _id_struct(width, len(v) // width).unpack(v)


def _ids(v: Any) -> tuple[int, ...]:
    if type(v) is not bytes or len(v) % ID_BYTES:
        raise DecodeError("malformed", f"tree ids are a multiple of {ID_BYTES} bytes")
    if len(v) > MAX_IDS_PER_MESSAGE * ID_BYTES:
        raise DecodeError("malformed", f"more than {MAX_IDS_PER_MESSAGE} tree ids")
    return _split_ids(v, ID_BYTES)


def encode_packet(p: Packet) -> bytes:
    body: bytes = _packer.pack((p.sender, [_message_tuple(m) for m in p.messages]))
    return bytes((VERSION,)) + body


def message_size(m: Message) -> int:
    """Exact bytes `m` adds inside a packet. Cheap (one C-level pack); immutable rumors are sized once by
    the Node when queued, so no cache is needed. A state rumor (every delivered write is sized several times:
    queued, spread on the tree, charged to the budget) is sized by arithmetic, without packing a copy of its
    payload: [type, bin] is a fixarray byte, a fixint type byte and msgpack's bin header (`_bin_size`)."""
    if type(m) is StateRumor:
        return 2 + _bin_size(len(m.payload))
    return len(_packer.pack(_message_tuple(m)))


def _bin_size(n: int) -> int:
    """Bytes of a msgpack bin of `n` bytes: bin 8, 16 or 32 header, then the bytes."""
    return n + (2 if n < 0x100 else 3 if n < 0x10000 else 5)


def packet_overhead(sender: str) -> int:
    """Upper bound of a packet's bytes besides its messages: version, outer array, sender, message array
    header, and the security envelope's reserve."""
    return 1 + 1 + len(_packer.pack(sender)) + _ARRAY_HEADER_MAX + ENVELOPE_RESERVE


def encode_push_pull(s: PushPullState) -> bytes:
    """A full membership view for a stream. Bodies past `_COMPRESS_OVER` bytes are zlib-compressed (version
    byte `PUSH_PULL_ZLIB`): member names, addresses and metadata keys repeat, so the periodic sync — most of
    an idle agent's stream traffic — shrinks to a fraction."""
    rows = [(m.name, m.addr[0], m.addr[1], m.incarnation, int(m.state), dict(m.meta)) for m in s.members]
    body: bytes = _packer.pack((s.sender, s.join, rows))
    if len(body) > _COMPRESS_OVER:
        return bytes((PUSH_PULL_ZLIB,)) + zlib.compress(body, 6)
    return bytes((PUSH_PULL_VERSION,)) + body


# -- decoding ------------------------------------------------------------------------------------------

def _unpack(data: bytes, max_bytes: int) -> Any:
    """One msgpack object from `data[1:]`, with every length capped by the input size before allocation."""
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} > {max_bytes} bytes")
    if not data:
        raise DecodeError("truncated", "empty")
    n = len(data) - 1
    # Fast path (every packet): one C call with the same caps, no Unpacker object (a fifth of the cost; the
    # Unpacker's buffer limit is moot when the input is the whole buffer) and no copy of the body. Whatever
    # it refuses (trailing bytes included) is classified by the streaming path below, so the drop reasons
    # stay exactly those of that path.
    try:
        return msgpack.unpackb(memoryview(data)[1:], raw=False, use_list=True, strict_map_key=True,
                               max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n // 2, max_ext_len=0)
    except Exception:  # msgpack raises many types on garbage (ValueError, UnicodeDecodeError, ...).
        pass
    body = data[1:]
    try:
        unpacker = msgpack.Unpacker(
            raw=False, use_list=True, strict_map_key=True, max_buffer_size=max(n, 1),
            max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n // 2, max_ext_len=0,
        )
        unpacker.feed(body)
        obj = unpacker.unpack()
        if unpacker.tell() != n:
            raise DecodeError("malformed", "trailing bytes")
    except DecodeError:
        raise
    except msgpack.OutOfData as exc:
        raise DecodeError("truncated", str(exc)) from None
    except Exception as exc:  # msgpack raises many types on garbage (ValueError, UnicodeDecodeError, ...).
        raise DecodeError("malformed", f"{type(exc).__name__}: {exc}") from None
    return obj


def _str(v: Any) -> str:
    if type(v) is not str or len(v) > _MAX_NAME_BYTES:
        raise DecodeError("malformed", "expected a short string")
    if first_control_char(v) is not None:  # names are shown by gossipctl and logged (core/text.py)
        raise DecodeError("malformed", "a name holds a control character")
    return v


def _uint(v: Any, limit: int) -> int:
    if type(v) is not int or not 0 <= v <= limit:
        raise DecodeError("malformed", "expected an unsigned integer in range")
    return v


def _incarnation(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise DecodeError("malformed", "expected an unsigned incarnation")
    if v > MAX_INCARNATION:
        raise DecodeError("out_of_range", f"incarnation {v} above {MAX_INCARNATION}")
    return v


def valid_host(v: object) -> bool:
    """An IP literal in its canonical form (core/hosts.py `wire_host`): what a member address may carry.
    Anything else -- a hostname, an inet_aton spelling such as `127.1`, `::ffff:127.0.0.1`, a scope id, 64 x
    'é' -- is refused at decode, so it never reaches a sendto (which would resolve a name, blocking the loop)
    and no host is known under two spellings (the per-host caps count one)."""
    return wire_host(v)


def _host(v: Any) -> str:
    if not valid_host(v):
        raise DecodeError("bad_host", "expected an IP address in canonical form")
    return v  # type: ignore[no-any-return]


def _port(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= 0xFFFF:
        raise DecodeError("malformed", "expected a port number")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError("malformed", "expected a boolean")
    return v


def _meta(v: Any) -> dict[str, str]:
    if type(v) is not dict or not all(type(k) is str and type(x) is str for k, x in v.items()):
        raise DecodeError("malformed", "expected a map of strings")
    return v


def _message(t: Any) -> Message:
    """One message from its msgpack array: the type checked, then the field count (`_DECODERS`), then the fields
    (each decoder checks its own). One dict lookup by the type's int picks the decoder: comparing the type with
    enum members one after another cost ~0.1 µs each (an `IntEnum` member is a descriptor lookup), up to 16 of
    them for the last type."""
    if type(t) is not list or not t:
        raise DecodeError("malformed", "a message is a non-empty array")
    kind = t[0]
    if type(kind) is not int:
        raise DecodeError("malformed", "message type is not an int")
    entry = _DECODERS.get(kind)
    if entry is None:
        raise DecodeError("unknown_type", f"message type {kind}")
    arity, decode, name = entry
    if len(t) != arity:
        if kind == _DIGEST_TYPE and len(t) == 3:
            return _digest_summary(t)
        raise DecodeError("malformed", f"{name} has {len(t)} fields")
    return decode(t)


def _state_rumor(t: list[Any]) -> StateRumor:
    if type(t[1]) is not bytes:
        raise DecodeError("malformed", "state payload is not bytes")
    return StateRumor(t[1], False)


def _critical_state_rumor(t: list[Any]) -> StateRumor:
    if type(t[1]) is not bytes:
        raise DecodeError("malformed", "state payload is not bytes")
    return StateRumor(t[1], True)


def _ping_of(t: list[Any]) -> Ping:
    return Ping(_uint(t[1], _MAX_U32), _str(t[2]), _str(t[3]), (_host(t[4]), _port(t[5])))


def _compact_ping_of(t: list[Any]) -> Ping:
    """[22, seq, target]: the source and its address are the Node's to fill in (the packet's sender, and where
    it lives: core/probing.py `_compact_ping`)."""
    return Ping(_uint(t[1], _MAX_U32), _str(t[2]), "", UNKNOWN_ADDR, True)


def _ack_of(t: list[Any]) -> Ack:
    return Ack(_uint(t[1], _MAX_U32), _uint(t[2], _MAX_U32))


def _nack_of(t: list[Any]) -> Nack:
    return Nack(_uint(t[1], _MAX_U32))


def _ping_req_of(t: list[Any]) -> PingReq:
    return PingReq(_uint(t[1], _MAX_U32), _str(t[2]), (_host(t[3]), _port(t[4])), _str(t[5]),
                   (_host(t[6]), _port(t[7])), _bool(t[8]))


def _alive_of(t: list[Any]) -> Alive:
    return Alive(_str(t[1]), _incarnation(t[2]), (_host(t[3]), _port(t[4])), _meta(t[5]))


def _suspect_of(t: list[Any]) -> Suspect:
    return Suspect(_str(t[1]), _incarnation(t[2]), _str(t[3]))


def _dead_of(t: list[Any]) -> Dead:
    return Dead(_str(t[1]), _incarnation(t[2]), _str(t[3]))


def _digest_of(t: list[Any]) -> Digest:
    if type(t[3]) is not bytes or len(t[3]) != ROOT_PREFIX_BYTES:
        raise DecodeError("malformed", f"a digest's root is {ROOT_PREFIX_BYTES} bytes")
    seq, lag = _uint(t[2], MAX_SEQ), t[5]
    if type(lag) is not int or not 0 <= seq - lag <= MAX_HLC_MS:
        raise DecodeError("malformed", "a digest's HLC is out of range")
    return Digest(_str(t[1]), seq, t[3], _uint(t[4], MAX_KEYS), seq - lag)


def _coordinate_of(t: list[Any]) -> NetCoordinate:
    # Only the shape here (exact length, so nothing else is read); NaN or out-of-range numbers are the
    # receiving core's counted refusal (VivaldiClient.accept), which keeps the ping or ack beside them.
    return _coordinate(t[1])


def _compact_coordinate_of(t: list[Any]) -> NetCoordinate:
    return _coordinate(t[1], compact=True)


def _peer_coordinates_of(t: list[Any]) -> PeerCoordinates:
    return _peer_coordinates(t[1])


def _compact_peer_coordinates_of(t: list[Any]) -> PeerCoordinates:
    return _peer_coordinates(t[1], compact=True)


def _ihave_of(t: list[Any]) -> IHave:
    return IHave(_ids(t[1]))


def _graft_of(t: list[Any]) -> Graft:
    return Graft(_ids(t[1]))


def _prune_of(t: list[Any]) -> Prune:
    return Prune()


def _pull_of(t: list[Any]) -> PullRequest:
    return PullRequest(_str(t[1]), (_host(t[2]), _port(t[3])))


def _short_ids(t: list[Any]) -> ShortIds:
    """[19, kind, ids]: a kind of 0-255 (one this release does not know is kept, and ignored by the Node) and at
    most MAX_IDS_PER_MESSAGE ids of SHORT_ID_BYTES bytes, checked before any is built."""
    v = t[2]
    if type(v) is not bytes or len(v) % SHORT_ID_BYTES:
        raise DecodeError("malformed", f"short ids are a multiple of {SHORT_ID_BYTES} bytes")
    if len(v) > MAX_IDS_PER_MESSAGE * SHORT_ID_BYTES:
        raise DecodeError("malformed", f"more than {MAX_IDS_PER_MESSAGE} short ids")
    return ShortIds(_uint(t[1], 0xFF), _split_ids(v, SHORT_ID_BYTES))


def _coordinate(v: Any, *, compact: bool = False, row: bool = False) -> NetCoordinate:
    """A coordinate's bytes in the older form or the `compact` one; marked compact only as a message of its own
    (a row's form is its message's)."""
    # Only the shape here (exact length, so nothing else is read); NaN or out-of-range numbers are the
    # receiving core's counted refusal (VivaldiClient.accept), which keeps the messages beside them.
    layout = _COMPACT_COORDINATE if compact else _COORDINATE
    if type(v) is not bytes or len(v) != layout.size:
        raise DecodeError("malformed", f"a coordinate is {layout.size} bytes")
    *vec, height, error, adjustment = layout.unpack(v)
    return NetCoordinate(tuple(vec), height, error, adjustment, compact and not row)


def _peer_coordinates(v: Any, *, compact: bool = False) -> PeerCoordinates:
    """[[name, coordinate, age in 0.1 s], ...]: at most MAX_PEER_COORDINATE_ROWS rows, checked before any is
    built."""
    if type(v) is not list or len(v) > MAX_PEER_COORDINATE_ROWS:
        raise DecodeError("malformed", f"second-hand coordinates are a list of at most {MAX_PEER_COORDINATE_ROWS}")
    rows = []
    for row in v:
        if type(row) is not list or len(row) != 3:
            raise DecodeError("malformed", "a second-hand coordinate row has 3 fields")
        rows.append((_str(row[0]), _coordinate(row[1], compact=compact, row=True), _uint(row[2], 0xFFFF) / 10))
    return PeerCoordinates(tuple(rows), compact)


def _digest_summary(t: list[Any]) -> DigestSummary:
    """The short form of a digest message: [9, checksums, reply]."""
    b = t[1]
    if type(b) is not bytes or not b or len(b) % 2 or len(b) > 2 * MAX_SUMMARY_BUCKETS:
        raise DecodeError("malformed", f"a digest summary is 1 to {MAX_SUMMARY_BUCKETS} two-byte buckets")
    return DigestSummary(b, _bool(t[2]))


_DIGEST_TYPE = int(MessageType.DIGEST)  # arity 6, or 3 for its short form (a summary)
_DECODERS: dict[int, tuple[int, Callable[[list[Any]], Message], str]] = {
    int(mtype): (arity, decode, mtype.name.lower()) for mtype, arity, decode in (
        (MessageType.PING, 6, _ping_of), (MessageType.ACK, 3, _ack_of), (MessageType.NACK, 2, _nack_of),
        (MessageType.PING_REQ, 9, _ping_req_of), (MessageType.ALIVE, 6, _alive_of),
        (MessageType.SUSPECT, 4, _suspect_of), (MessageType.DEAD, 4, _dead_of),
        (MessageType.STATE, 2, _state_rumor), (MessageType.PULL, 4, _pull_of), (MessageType.DIGEST, 6, _digest_of),
        (MessageType.STATE_CRITICAL, 2, _critical_state_rumor), (MessageType.COORDINATE, 2, _coordinate_of),
        (MessageType.IHAVE, 2, _ihave_of), (MessageType.GRAFT, 2, _graft_of), (MessageType.PRUNE, 1, _prune_of),
        (MessageType.PEER_COORDINATES, 2, _peer_coordinates_of), (MessageType.SHORT_IDS, 3, _short_ids),
        (MessageType.COMPACT_COORDINATE, 2, _compact_coordinate_of),
        (MessageType.COMPACT_PEER_COORDINATES, 2, _compact_peer_coordinates_of),
        (MessageType.COMPACT_PING, 3, _compact_ping_of),
    )
}
"""Wire type -> (field count with the type, decoder, name for errors): every `MessageType` (a test checks)."""


def _check_version(data: bytes, version: int) -> None:
    if not data:
        raise DecodeError("truncated", "empty")
    if data[0] != version:
        raise DecodeError("bad_version", f"version byte 0x{data[0]:02x}")


def decode_packet(data: bytes, max_bytes: int = MAX_PACKET_BYTES) -> Packet:
    """A packet from a datagram; raises `DecodeError` and nothing else on bad input."""
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} > {max_bytes} bytes")
    _check_version(data, VERSION)
    obj = _unpack(data, max_bytes)
    if type(obj) is not list or len(obj) != 2 or type(obj[1]) is not list:
        raise DecodeError("malformed", "a packet is [sender, [messages]]")
    try:
        return Packet(_str(obj[0]), tuple([_message(t) for t in obj[1]]))
    except DecodeError:
        raise
    except Exception as exc:  # defensive: a field check missed something; still never crash the caller.
        raise DecodeError("malformed", f"{type(exc).__name__}: {exc}") from None


_ROW_HEADER = b"\x96"  # a msgpack array of 6 items: the only header a member row is encoded with
_MAX_META_ITEMS = 16_250
"""Most metadata entries a member row may hold: gossip.maxMetaBytes is at most 32,500 and counts 2 bytes per
entry beyond its strings."""
_MAX_ROW_BYTES = 2 * 32_500 + 3 * 9 + 2 * _MAX_NAME_BYTES + 16
"""Most encoded bytes one member row may take (metadata of the largest allowed size, the name, the host and
three integers): a longer row is refused before it is built."""


def _meta_fits(row: memoryview, max_meta_bytes: int) -> bool:
    """Whether a member row's metadata can be within `max_meta_bytes` as node.meta_size measures it (each
    entry's key and value bytes + 2), read from its headers (nothing built). An entry counts at least 2, and
    its encoding spends at most 2 header bytes per string more than meta_size counts (str16: strings stay
    under 64 KiB), so an honest map has at most max/2 entries in at most 3 * max bytes. The exact measure is
    applied where rumors merge (`meta_too_large`). Without this, rows were built up to the largest
    maxMetaBytes any agent may set: a 3.2 MiB state of large maps cost ~145 ms."""
    peek = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(row)), max_ext_len=0)
    peek.feed(row)
    try:
        peek.read_array_header()
        for _ in range(5):  # name, host, port, incarnation, state
            peek.skip()
        items: int = peek.read_map_header()
    except (ValueError, TypeError, msgpack.UnpackException):
        return True  # not a map: the row's own decode names it
    return items <= max_meta_bytes // 2 and len(row) - peek.tell() <= 3 * max_meta_bytes


_DROPPED = object()  # `_push_pull_field`: the row failed its `keep` check and was not built


def _push_pull_field(body: memoryview, unpacker: msgpack.Unpacker, max_array: int, max_map: int,
                     max_bytes: int | None = None, keep: Callable[[memoryview], bool] | None = None) -> Any:
    """The next object of `unpacker` (fed `body`), found by skip (which builds nothing) and built on its own
    with at most one array of `max_array` items and one map of `max_map` entries: a field meant to be a string
    or a member row refuses nested containers at the second one, not after millions."""
    start = unpacker.tell()
    unpacker.skip()
    end = unpacker.tell()
    if max_bytes is not None and end - start > max_bytes:
        raise DecodeError("malformed", f"a member row of {end - start} bytes (at most {max_bytes})")
    if keep is not None and not keep(body[start:end]):
        return _DROPPED
    size = end - start
    try:
        return msgpack.unpackb(body[start:end], raw=False, use_list=True, strict_map_key=True,
                               max_str_len=size, max_bin_len=size, max_array_len=max_array, max_map_len=max_map,
                               max_ext_len=0, **_one_container_each())
    except _NestedContainer:
        raise DecodeError("malformed", "a push-pull field holds nested arrays or maps") from None


class _NestedContainer(Exception):
    pass


def _one_container_each() -> dict[str, Any]:
    """msgpack hooks refusing a second array or a second map as soon as it is built (inner ones first)."""
    seen = {"list": 0, "map": 0}

    def hook(kind: str) -> Any:
        def count(items: Any) -> Any:
            seen[kind] += 1
            if seen[kind] > 1:
                raise _NestedContainer
            return items
        return count
    return {"list_hook": hook("list"), "object_hook": hook("map")}


def decode_push_pull(data: bytes, max_bytes: int, max_members: int | None = None, *,
                     max_meta_bytes: int | None = None) -> PushPullState:
    """A push-pull state from a stream body of at most `max_bytes`; raises `DecodeError` only.

    With `max_meta_bytes` (gossip.maxMetaBytes), a row whose metadata cannot fit it is dropped before its map
    is built and counted in `meta_dropped` (`_meta_fits`); the rest of the state is kept.

    With `max_members`, a body listing more rows is refused (`too_many_members`) before any row is checked or
    built: 40,000 forged rows fit in 150 KB, and building them is the expensive part."""
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} > {max_bytes} bytes")
    if data[:1] == bytes((PUSH_PULL_ZLIB,)):
        # Inflate at most max_bytes: a small forged body must not expand into gigabytes.
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(data[1:], max_bytes)
        except zlib.error as exc:
            raise DecodeError("malformed", f"zlib: {exc}") from None
        if inflater.unconsumed_tail:
            raise DecodeError("oversized", f"inflates past {max_bytes} bytes")
        if not inflater.eof:
            raise DecodeError("truncated", "zlib stream ends early")
        buffer, start = plain, 0
    else:
        _check_version(data, PUSH_PULL_VERSION)
        buffer, start = data, 1
    # Headers first, rows one at a time: the member bound is checked at the members array's header and each
    # row is built within its own small bounds, so whatever the body holds, what decoding builds stays in
    # proportion to the valid rows (one unpackb of 4 MiB of nested empty arrays built ~258 MiB, 9 s, review).
    # The unpacker reads the body in chunks from a stream sharing its bytes (feeding it would copy them).
    body = memoryview(buffer)[start:]
    n = len(body)
    stream = io.BytesIO(buffer)
    stream.seek(start)
    unpacker = msgpack.Unpacker(stream, raw=False, max_buffer_size=max(n, 1), max_str_len=n,
                                max_bin_len=n, max_array_len=n, max_map_len=n // 2, max_ext_len=0)
    try:
        if unpacker.read_array_header() != 3:
            raise DecodeError("malformed", "a push-pull state is [sender, join, [members]]")
        sender = _str(_push_pull_field(body, unpacker, 0, 0))
        join = _bool(_push_pull_field(body, unpacker, 0, 0))
        count = unpacker.read_array_header()
        if max_members is not None and count > max_members:
            raise DecodeError("too_many_members", f"{count} rows > membership.maxMembers {max_members}")
        members = []
        dropped = 0
        for _ in range(count):
            if body[unpacker.tell():unpacker.tell() + 1] != _ROW_HEADER:  # (refused before its bytes are walked)
                raise DecodeError("malformed", "a member row has 6 fields")
            row = _push_pull_field(body, unpacker, 6, _MAX_META_ITEMS, _MAX_ROW_BYTES,
                                   None if max_meta_bytes is None else lambda r: _meta_fits(r, max_meta_bytes))
            if row is _DROPPED:
                dropped += 1
                continue
            if type(row) is not list or len(row) != 6:
                raise DecodeError("malformed", "a member row has 6 fields")
            state = _uint(row[4], 3)
            members.append(MemberSnapshot(_str(row[0]), (_host(row[1]), _port(row[2])), _incarnation(row[3]),
                                          MemberState(state), _meta(row[5])))
        if unpacker.tell() != n:
            raise DecodeError("malformed", "trailing bytes")
        return PushPullState(sender, tuple(members), join, dropped)
    except DecodeError:
        raise
    except msgpack.OutOfData as exc:
        raise DecodeError("truncated", str(exc) or "push-pull state ends early") from None
    except Exception as exc:  # msgpack raises many types on garbage (ValueError, UnicodeDecodeError, ...).
        raise DecodeError("malformed", f"{type(exc).__name__}: {exc}") from None

