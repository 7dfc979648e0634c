"""Wire messages: small frozen classes, one per protocol message.

Membership rumors (`Alive`, `Suspect`, `Dead`) follow memberlist: a `Dead` whose `sender` is the member
itself means a graceful leave. `StateRumor` carries an opaque payload for the replicated state layer
(agent II); the membership core only disseminates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

Address = tuple[str, int]
"""(host, port): UDP gossip and the HTTP (TCP) peer API share one port number."""


class MemberState(IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


UNKNOWN_ADDR: Address = ("", 0)
"""A compact ping's `source_addr` as decoded: the receiving Node fills in the sender's (core/probing.py)."""


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str  # name the sender believes lives at the address (a stale address is detected)
    source: str
    source_addr: Address
    # The wire form: type 22 ([22, seq, target], ~21 bytes fewer) to a member that reads it, where the source
    # is always the packet's sender and its address is looked up (core/probing.py `_compact_ping`); else type 0.
    compact: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    # Digest of the sender's set of alive members (MemberTable.digest); 0 = not given. A prober whose own
    # digest differs syncs with the acker: a member that missed a rumor catches up within a probe or two.
    digest: int = 0


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: an intermediary had no answer from the target; tells the prober its own link works."""

    seq: int


@dataclass(frozen=True, slots=True)
class PingReq:
    seq: int
    target: str
    target_addr: Address
    source: str
    source_addr: Address
    want_nack: bool = True


@dataclass(frozen=True, slots=True)
class Alive:
    name: str
    incarnation: int
    addr: Address
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suspect:
    name: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Dead:
    name: str
    incarnation: int
    sender: str  # == name: a graceful leave


@dataclass(frozen=True, slots=True)
class StateRumor:
    """Opaque replicated-state update; the state layer decides whether it is new (and so forwarded).

    `critical`: a write the client flagged `?priority=critical`. It travels as its own wire type (so relays
    keep its priority) to members known to read it, as a plain state rumor to the others."""

    payload: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class PullRequest:
    """Pull gossip: 'send me your freshest rumors'. It names only the asker: the answer carries what the
    responder's queue holds, each rumor at most once per asker."""

    source: str
    source_addr: Address


@dataclass(frozen=True, slots=True)
class Digest:
    """A member's convergence digest: a prefix of its replica's Merkle root, its key count and HLC high-water
    mark, versioned by a per-member sequence number. Piggybacked in a small per-packet allowance and merged by
    sequence (core/digests.py), never queued as a rumor: publishing a root costs no incarnation and no Alive."""

    name: str
    seq: int
    root: bytes  # the first ROOT_PREFIX_BYTES bytes of the Merkle root
    keys: int
    hlc_ms: int


@dataclass(frozen=True, slots=True)
class DigestSummary:
    """A member's convergence digest table in a few bytes (core/digests.py): per bucket of member names, a
    16-bit checksum of its rows. A peer answers the buckets that differ with its rows of them; with `reply`
    it adds its own summary, so the asker can send back what the peer lacks. Travels as a digest message
    (type 9) with two fields instead of five."""

    buckets: bytes  # two bytes per bucket
    reply: bool


@dataclass(frozen=True, slots=True)
class NetCoordinate:
    """The sender's Vivaldi network coordinate (core/vivaldi.py), piggybacked on pings and acks so the prober
    can turn the probe's round trip into a coordinate update (core/topology_state.py). Values as decoded: the
    codec checks the shape, the receiving core checks the numbers (`VivaldiClient.accept`)."""

    vec: tuple[float, ...]
    height: float
    error: float
    adjustment: float
    # The wire form: type 20 (half floats, 22 bytes) to a member that reads it, else type 14 (float32, 44).
    compact: bool = False


@dataclass(frozen=True, slots=True)
class PeerCoordinates:
    """Second-hand coordinates: other members' coordinates as the sender holds them, each with its age in
    seconds (how long ago it was current at the sender), so a receiver never replaces a fresher one it holds
    (core/topology_state.py). Bounded by the codec (MAX_PEER_COORDINATE_ROWS rows)."""

    rows: tuple[tuple[str, NetCoordinate, float], ...]
    # The wire form: type 21 (half-float coordinates) to a member that reads it, else type 18 (float32). The
    # rows' own NetCoordinates' `compact` is not looked at.
    compact: bool = False


@dataclass(frozen=True, slots=True)
class IHave:
    """Broadcast tree (core/plumtree.py): the sender holds the state payloads with these ids."""

    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Graft:
    """Broadcast tree: send me these payloads, and push the next ones to me (no ids: a link request)."""

    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Prune:
    """Broadcast tree: your payloads reach me twice; stop pushing them to me, announce them instead."""


class ShortKind(IntEnum):
    """What a `ShortIds` message says about its ids."""

    OFFER = 0  # no ids: "I read short ids" (sent apart: a hello, beside a probe, or an answer to one)
    PULL = 1   # a pull request; the ids are state payloads the asker holds, which the answer leaves out
    IHAVE = 2  # broadcast tree: the sender holds these payloads (IHave with short ids)
    GRAFT = 3  # broadcast tree: send me these payloads announced with short ids (Graft with short ids)


@dataclass(frozen=True, slots=True)
class ShortIds:
    """Wire type 19: a pull request or tree message naming state payloads by SHORT_ID_BYTES-byte prefixes of
    their tree ids (core/plumtree.py `short_id`), half the bytes of an IHave or Graft id. A collision (two
    payloads, one prefix) can only leave a payload out of an answer or an announcement, which anti-entropy
    repairs. Only to members known to read it (core/readers.py SHORT_IDS): an older agent drops a whole packet
    holding a type it does not know. A kind this release does not know is ignored."""

    kind: int
    ids: tuple[int, ...] = ()


Rumor = Alive | Suspect | Dead | StateRumor
Message = (Ping | Ack | Nack | PingReq | Alive | Suspect | Dead | StateRumor | PullRequest | Digest | DigestSummary
           | NetCoordinate | PeerCoordinates | IHave | Graft | Prune | ShortIds)


@dataclass(frozen=True, slots=True)
class Packet:
    """What travels in one UDP datagram: the sender's name and one or more messages (compound)."""

    sender: str
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """One row of a push-pull full membership exchange."""

    name: str
    addr: Address
    incarnation: int
    state: MemberState
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PushPullState:
    """Full membership view exchanged over a stream (HTTP) during push-pull sync and on join."""

    sender: str
    members: tuple[MemberSnapshot, ...]
    join: bool = False
    meta_dropped: int = field(default=0, compare=False)  # rows the decoder dropped: metadata over maxMetaBytes
