"""Merkle anti-entropy between two replicas, as pure request/response data (sans-I/O).

One initiator (`Session`) drives; the responder (`respond`) is stateless, so each round is one
independent HTTP request and a peer keeps nothing between rounds. Every round carries the same two shapes
(`AeRequest` / `AeResponse`), so the frontiers at different depths advance together:

1. The initiator sends its root; if the roots differ the responder answers with the root's children.
2. For every child that differs the initiator decides, from both sides' key counts under it:
   - the responder has no key there: push all of ours; we have none: ask for all of theirs;
   - few keys (listing them is cheaper than `fanout` more hashes): ask for a *listing*, 16 bytes per key
     (8 bytes of key hash, 8 of version digest);
   - otherwise *descend*: ask for that node's children next round.
   All differing nodes of a level go in ONE request, so round trips grow with the depth, not with d.
3. A listing compared with ours yields the differing keys. Keys only they hold: ask for them. Keys we
   hold that differ or they lack: push ours; the responder merges and sends the merge back only if it
   differs from what we pushed (theirs was newer or concurrent). So a one-sided change costs one entry.

Bytes: each differing key costs `fanout` hashes per level down to where its subtree holds about
2 * fanout keys, then a listing, then its entries: O(d · log(n/d)) hashes plus d entries, and nothing
proportional to n. Both sides must have the same tree shape (`bits`, `depth`); every message says which.
Responses are capped (`Limits`); what does not fit is left for the next round or the next session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gossip_agent.core.ae_entries import PushedEntries, UndecodableEntry
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.kvstore import Entry, InvalidEntry, KvStore, ValueEntry
from gossip_agent.core.merkle import HASH_BYTES, MerkleTree

NodeId = tuple[int, int]
"""(level, index): level 0 is the root, level `depth` the leaves; index < 16**level."""

KEY_ID_BYTES = 8
DIGEST_ID_BYTES = 8
RECORD_BYTES = KEY_ID_BYTES + DIGEST_ID_BYTES


class AntiEntropyError(ValueError):
    """A malformed or incompatible request/response (e.g. different tree depths)."""


NO_ANSWER_LIMIT = 1 << 62


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep every message bounded, whatever the size of the difference."""

    max_nodes: int = 4096            # descend + list + want_nodes per request
    max_want: int = 8192             # key ids per request
    max_records: int = 65536         # listing records per response (16 bytes each: 1 MiB)
    max_entry_bytes: int = 4 << 20   # entries per message (approximate bytes)
    max_rounds: int = 64             # a session gives up after this many round trips
    # CPU per response: leaf slots walked plus keys visited for listings and wanted nodes. Past it the response
    # is truncated (the first node is always served, so a session progresses). 4,096 `want_nodes` each
    # walking every leaf of a 10k-key store used to cost 25 s of event loop; now a response is ~10-50 ms.
    max_scan: int = 1 << 16
    # Approximate bytes of one answer (children, listings, entries): what the byte budget lets the responder
    # send now (`answer_limits`). Past it the answer is truncated; its first node is always served.
    max_answer_bytes: int = NO_ANSWER_LIMIT
    # Entries one request may push (the responder refuses more, before decoding them: io/state_service.py).
    # Decoding and merging cost ~10-30 us per entry on the event loop, so a 4 MiB push of 50k tiny entries
    # held the responder's loop ~1 s (probes stalled: false suspicion of it). The initiator splits its pushes
    # to fit (more rounds); the merges an answer sends back are at most this many too.
    max_push: int = 512
    # Entries one answer may carry (the responder truncates there; the initiator refuses more, read from the
    # answer's array header before any is decoded). 2 MiB of entries of a few bytes each would otherwise be
    # ~100k entries, and a hostile answer of 16 MiB millions.
    max_answer_entries: int = 1 << 16


# Approximate encoded sizes, for shrinking messages to a byte budget (accounting uses the real encoding).
NODE_ID_BYTES = 8          # a (level, index) pair in a request
WANT_BYTES = KEY_ID_BYTES + 2
# What one wanted key's entry is assumed to cost the responder: wants past what its answer holds are dropped
# (truncated) and found again only by the next session's descent, which costs more than a few extra rounds.
ENTRY_GUESS_BYTES = 1024
# Under a byte budget a session makes many small rounds: it may take this many times Limits.max_rounds, so it
# finishes its work instead of starting again from the root (each restart pays the descent again).
BUDGET_ROUNDS_FACTOR = 8
SHELL_BYTES = 64           # a message's fixed fields
# Pushed entries merged at once: the driver yields to its event loop between chunks (`PushMerge`), so one
# request's merge holds the loop ~1 ms at a time, however many requests are served at once.
MERGE_CHUNK = 64
# ... and at most this many of their wire bytes (a decoded push, `PushedEntries`; at least one entry): what a
# chunk builds and costs grows with its bytes, not its entry count (512 entries of 900 versions each built
# 137 MiB in one go, review). ~4 ms of CPU per chunk of minimal versions (load 8).
MERGE_CHUNK_BYTES = 16 * 1024


def child_bytes(fanout: int) -> int:
    """Approximate bytes of one `Children` in an answer."""
    return fanout * (HASH_BYTES + 1) + NODE_ID_BYTES + 4


def request_limits(room: int, base: Limits | None = None, fanout: int = 16) -> Limits:
    """The initiator's limits for messages of about `room` bytes (the send budget's `stream_room`): pushes fill
    half a request; descents, listings and wants are as many as their answers (the peer's, under the same
    kind of budget) can hold. The work left over goes in the next round, so a session only takes more rounds
    (up to BUDGET_ROUNDS_FACTOR times as many). Sessions still push what the peer lacks: a session then
    spends both sides' budgets; pull-only sessions left half of each budget unused (the budget bench converged
    in 53-65 s against 40 s pushing). Members pushing the same keys to one peer at once is what the peer's
    push lease prevents (core/ae_lease.py)."""
    base = base or Limits()
    nodes = max(1, room // child_bytes(fanout))
    return replace(base, max_nodes=min(base.max_nodes, nodes),
                   max_want=min(base.max_want, max(1, room // ENTRY_GUESS_BYTES)),
                   max_entry_bytes=min(base.max_entry_bytes, max(1, room // 2)),
                   max_rounds=base.max_rounds * BUDGET_ROUNDS_FACTOR)


def answer_limits(room: int, base: Limits | None = None) -> Limits:
    """The responder's limits for an answer of about `room` bytes. What a request may ask (max_nodes,
    max_want) is unchanged: a request from an agent without a budget stays valid, its answer is truncated."""
    base = base or Limits()
    return replace(base, max_answer_bytes=min(base.max_answer_bytes, max(0, room - SHELL_BYTES)),
                   max_entry_bytes=min(base.max_entry_bytes, max(1, room - SHELL_BYTES)))


@dataclass(frozen=True, slots=True)
class AeRequest:
    shape: tuple[int, int]                   # (bits per level, depth) of the sender's tree
    root: bytes | None = None                # first round only
    descend: tuple[NodeId, ...] = ()         # send the children (hashes and counts) of these
    listing: tuple[NodeId, ...] = ()         # send (key id, digest id) of every key under these
    push: Sequence[Entry] = ()               # entries for the responder to merge (decoded: PushedEntries)
    want: tuple[bytes, ...] = ()             # key ids (hash prefixes) whose entries we want
    want_nodes: tuple[NodeId, ...] = ()      # every entry under these (we hold none there)


@dataclass(frozen=True, slots=True)
class Children:
    node: NodeId
    hashes: bytes              # fanout x 32 bytes
    counts: bytes              # fanout key counts, one byte each, saturating at 255 (only "0" and
                               # "few enough to list" matter to the initiator)


@dataclass(frozen=True, slots=True)
class Listing:
    node: NodeId
    records: bytes             # n x (key id ‖ digest id), RECORD_BYTES each


@dataclass(frozen=True, slots=True)
class AeResponse:
    shape: tuple[int, int]
    root: bytes | None = None         # answers the first round's root only
    children: tuple[Children, ...] = ()
    listings: tuple[Listing, ...] = ()
    entries: tuple[Entry, ...] = ()
    collected: tuple[str, ...] = ()   # pushed keys whose tombstones the responder had collected
    truncated: bool = False           # something did not fit; the next session continues
    push_refused: int = 0             # pushed entries the responder did not take and sends nothing of back
    #                                   (`PushMerge.unanswered`). Not in the body (older agents refuse a field
    #                                   more): io/state_service carries it in a header, which they ignore.


AeMessage = AeRequest | AeResponse


def approx_entry_bytes(entry: Entry) -> int:
    """A cheap upper-ish estimate of an entry's encoded size, for capping (accounting uses the codec)."""
    if isinstance(entry, ValueEntry):
        return (len(entry.key) + 16 + 12 * len(entry.context)
                + sum(24 + len(v.dot[0]) + len(v.value or b"") for v in entry.versions))
    return len(entry.key) + 64  # CRDTs: small, and capped by max_value_bytes anyway


# -- responder ---------------------------------------------------------------------------------------
def check_request(tree: MerkleTree, request: AeRequest, limits: Limits) -> None:
    """Refuse (AntiEntropyError) a request that breaks the protocol or asks more than `limits` allow, before
    any of it is merged."""
    _check_shape(tree, request.shape)
    nodes = (*request.descend, *request.listing, *request.want_nodes)
    if len(nodes) > limits.max_nodes or len(request.want) > limits.max_want:
        raise AntiEntropyError("request asks for too many nodes or keys")
    if len(request.push) > limits.max_push:
        raise AntiEntropyError(f"request pushes {len(request.push)} entries; at most {limits.max_push} per request")
    if any(len(prefix) != KEY_ID_BYTES for prefix in request.want):
        raise AntiEntropyError(f"key ids must be {KEY_ID_BYTES} bytes")
    for level, index in nodes:
        _check_node(tree, level, index, inner=False)
    for level, index in request.descend:
        _check_node(tree, level, index, inner=True)


class PushMerge:
    """A request's pushed entries, merged a chunk at a time: the driver calls `step` until `done`, yielding
    to its event loop in between (each step holds it for `count` merges only). What the request asks besides
    is answered by `respond(..., merged=this)` afterwards. Another write between steps is harmless: each
    merge is a CRDT join, and a merge sent back is the state at its step (newer than what was pushed)."""

    def __init__(self, store: KvStore, request: AeRequest, limits: Limits = Limits()) -> None:
        check_request(store.merkle, request, limits)
        self.store = store
        self.request = request
        self.limits = limits
        self.collected: list[str] = []
        self.entries: list[Entry] = []  # merges to send back
        self.sizes: list[int] = []      # their approximate sizes
        self.room = limits.max_entry_bytes
        self.truncated = False
        self.refused: str | None = None  # why a pushed entry did not decode (the request is then refused)
        self.over_limit: dict[str, int] = {}  # reason -> pushed entries skipped as over a key or value ceiling
        self._skipped = 0                 # pushed entries skipped at decode (their keys unknown here)
        self._refused_keys: list[str] = []  # pushed entries the store refused
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self.request.push)

    def step(self, now_ms: int, count: int = MERGE_CHUNK, max_bytes: int = MERGE_CHUNK_BYTES) -> int:
        """Merge up to `count` more pushed entries, of at most `max_bytes` on the wire when the push is still
        encoded (`PushedEntries`; the first always goes). Invalid ones are skipped; one that does not decode
        ends the merge (`refused`: what was merged before it stays, each merge being a join). Returns how many
        changed nothing here (pushed to us already by someone else, or by gossip: the duplicates worth
        avoiding)."""
        store = self.store
        push = self.request.push
        stop = min(len(push), self._next + max(1, count))
        spent = 0
        stale = 0
        encoded = push if isinstance(push, PushedEntries) else None  # (else plain entries: no byte bound)
        while self._next < stop:
            index = self._next
            if encoded is not None:
                wire = encoded.wire_bytes(index)
                if spent and spent + wire > max_bytes:
                    break
                spent += wire
            self._next += 1
            try:
                entry = push[index]
            except UndecodableEntry as err:
                self.refused = str(err)
                self._next = len(push)
                break
            except EntryOverLimit as err:
                self.over_limit[err.reason] = self.over_limit.get(err.reason, 0) + 1
                self._skipped += 1
                continue
            except InvalidEntry:
                self._skipped += 1
                continue
            try:
                changed = store.apply_remote(entry, now_ms)
            except InvalidEntry:
                changed = None  # refused (counted by the store): ours goes back, so the initiator sees it
                self._refused_keys.append(entry.key)  # was not taken (AnswerMerge: push_refused); if we
            else:                                     # hold none, `unanswered` tells it
                stale += not changed
                if not changed and store.was_collected(entry.key):
                    self.collected.append(entry.key)
                    continue
            merged = store.entry(entry.key)
            if merged is not None and merged != entry:  # ours was newer or concurrent: send the merge back
                size = approx_entry_bytes(merged)
                if self.entries and size > self.room:
                    # Past the answer's room (stale pushes of keys whose values are large here drew them all
                    # back, whatever the budget): the initiator's root still differs, its next session finds
                    # these.
                    self.truncated = True
                    continue
                self.room -= size
                self.entries.append(merged)
                self.sizes.append(size)
        return stale

    def unanswered(self, answer: Sequence[Entry]) -> int:
        """Pushed entries not taken of which `answer` holds no state of their key: skipped at decode, or refused
        by the store for a key we hold none of (or whose merge did not fit). The initiator counts a push refused
        when our state of its key comes back unchanged (`AnswerMerge`); these it cannot see, and counted them
        taken, so the answer says how many (`AeResponse.push_refused`)."""
        keys = {entry.key for entry in answer} if self._refused_keys else ()
        return self._skipped + sum(1 for key in self._refused_keys if key not in keys)

    def fit(self, room: int) -> tuple[list[Entry], int, bool]:
        """The merges to send back within an answer's `room` bytes (the first always goes), the room left
        and whether some were left out (the answer's room is known only once the merge is done: the byte
        budget refilled meanwhile)."""
        kept = 0
        for size in self.sizes:
            if kept and size > room:
                break
            room -= size
            kept += 1
        return self.entries[:kept], room, self.truncated or kept < len(self.entries)


def respond(store: KvStore, request: AeRequest, now_ms: int, limits: Limits = Limits(),
            merged: PushMerge | None = None) -> AeResponse:
    """Answer one round. Merges pushed entries first (invalid ones are skipped), all at once unless the
    driver merged them already, in chunks (`merged`, done)."""
    tree = store.merkle
    if merged is None:
        merged = PushMerge(store, request, limits)
        while not merged.done:
            merged.step(now_ms, len(request.push))
    elif not merged.done or merged.request is not request:
        raise ValueError("respond(merged=...) needs that request's PushMerge, done")
    if merged.refused is not None:
        raise AntiEntropyError(merged.refused)
    collected = merged.collected
    entries, room, truncated = merged.fit(limits.max_entry_bytes)
    root = tree.root() if request.root is not None else None
    descend = list(request.descend)
    if root is not None and request.root != root:
        descend.insert(0, (0, 0))
    # The byte budget's share for this answer: the merge sent back is already in it; the first node is
    # always served (a session progresses whatever the budget).
    answer = limits.max_answer_bytes - (limits.max_entry_bytes - room)
    per_child = child_bytes(tree.fanout)
    if len(descend) > 1 and len(descend) * per_child > answer:
        descend = descend[:max(1, answer // per_child)]
        truncated = True
    answer -= len(descend) * per_child
    children = tuple(Children(node, b"".join(tree.children(*node)),
                              bytes(min(255, tree.count(node[0] + 1, (node[1] << tree.bits) + i))
                                    for i in range(tree.fanout)))
                     for node in descend)
    served = bool(descend)
    listings: list[Listing] = []
    budget = limits.max_records
    scan = limits.max_scan
    for i, node in enumerate(dict.fromkeys(request.listing)):
        cost = tree.walk_cost(*node) + tree.count(*node)
        if i and cost > scan:
            truncated = True
            break
        if served and tree.count(*node) * RECORD_BYTES + NODE_ID_BYTES > answer:
            truncated = True
            break
        scan -= cost
        records = [khash[:KEY_ID_BYTES] + digest[:DIGEST_ID_BYTES]
                   for _, khash, digest in tree.items_under(*node)]
        if len(records) > budget:
            truncated = True
            break
        budget -= len(records)
        answer -= len(records) * RECORD_BYTES + NODE_ID_BYTES
        served = True
        listings.append(Listing(node, b"".join(records)))
    room = min(room, answer) if served else room
    wanted = [key for prefix in dict.fromkeys(request.want) for key in tree.keys_with_hash_prefix(prefix)]
    seen: set[str] = set()
    for key in _wanted_under(tree, tuple(dict.fromkeys(request.want_nodes)), wanted, scan):
        if key is None:
            truncated = True
            break
        if key in seen:
            continue
        seen.add(key)
        found = store.entry(key)
        if found is None:
            continue
        if len(entries) >= limits.max_answer_entries:
            truncated = True
            break
        room -= approx_entry_bytes(found)
        if room < 0 and (served or entries):
            truncated = True  # (one entry always goes, however large: a session progresses)
            break
        entries.append(found)
        served = True
    return AeResponse(_shape(tree), root, children, tuple(listings), tuple(entries), tuple(collected), truncated,
                      merged.unanswered(entries))


def _wanted_under(tree: MerkleTree, nodes: tuple[NodeId, ...], first: list[str], scan: int) -> Iterator[str | None]:
    """Keys asked for: `first`, then every key under `nodes`, lazily, charging leaf walks and keys against
    `scan`; yields None (and stops) once the budget is spent (the first node is always walked)."""
    yield from first
    for i, node in enumerate(nodes):
        cost = tree.walk_cost(*node)
        if i and cost > scan:
            yield None
            return
        scan -= cost
        for key, _, _ in tree.items_under(*node):
            scan -= 1
            if scan < 0 and i:
                yield None
                return
            yield key


def _shape(tree: MerkleTree) -> tuple[int, int]:
    return tree.bits, tree.depth


def _check_shape(tree: MerkleTree, shape: tuple[int, int]) -> None:
    if shape != _shape(tree):
        raise AntiEntropyError(f"Merkle tree shapes differ: ours (bits, depth) = {_shape(tree)}, theirs {shape}")


def _check_node(tree: MerkleTree, level: int, index: int, *, inner: bool) -> None:
    top = tree.depth - 1 if inner else tree.depth
    if not (0 <= level <= top and 0 <= index < 1 << (tree.bits * level)):
        raise AntiEntropyError(f"no such tree node ({level}, {index}) in a tree of shape {_shape(tree)}")


# -- initiator ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class SessionStats:
    rounds: int = 0
    pushed: int = 0        # entries sent to the peer
    pulled: int = 0        # entries received from the peer
    repaired: int = 0      # received entries that changed our store
    push_refused: int = 0  # pushed keys the peer sent back its own state of, which ours already covers: it
    #                        did not take ours (refused it: a limit), so they repaired nothing
    refused: int = 0       # received entries this side refused (the store: a limit, the clock drift; the decoder:
    #                        a key, value or counter over a ceiling): whatever was pushed for their keys converged
    #                        nothing, as the next session finds (`StateNode.on_anti_entropy_reply`)
    in_sync: bool = False  # roots were equal at the start
    truncated: bool = False
    push_held: bool = False  # the peer let another session push to it: this one only pulled after that


@dataclass(slots=True)
class _Work:
    descend: list[NodeId] = field(default_factory=list)
    listing: list[NodeId] = field(default_factory=list)
    push_keys: list[str] = field(default_factory=list)
    push_nodes: list[NodeId] = field(default_factory=list)
    want: list[bytes] = field(default_factory=list)
    want_nodes: list[NodeId] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.descend or self.listing or self.push_keys or self.push_nodes or self.want
                    or self.want_nodes)


class EntrySource(Protocol):
    """An answer's entries, decoded on demand (core/ae_codec.AnswerEntries): `take(n)` decodes up to `n`
    more (fewer once MERGE_CHUNK_BYTES of them are taken; raising on malformed ones), `remaining` says how many
    are left."""

    @property
    def remaining(self) -> int: ...

    @property
    def skipped(self) -> int:
        """Entries taken so far that the decoder skipped (over a ceiling: never handed to the store)."""
        ...

    def take(self, count: int) -> Sequence[Entry]: ...


class Session:
    """The initiating side of one anti-entropy exchange with one peer.

    `request = s.start()`; then while request: `request = s.handle(peer(request), now_ms)`. A driver with an
    event loop merges the answer's entries in chunks first (`AnswerMerge`), then `handle(head, now_ms,
    merged=that)`.

    An answer is input from a peer like any other: `handle` refuses (AntiEntropyError) children of nodes we
    did not ask to descend, listings of nodes we did not ask to list and collected keys we did not push,
    before any of it is compared or merged. (A peer could otherwise name any node and draw pushes of
    subtrees we never offered, or make us collect tombstones of keys it never saw.)
    """

    def __init__(self, store: KvStore, limits: Limits = Limits()) -> None:
        self.store = store
        self.limits = limits
        self.stats = SessionStats()
        self._work = _Work()
        self._started = False
        self._asked: AeRequest | None = None

    @property
    def asked(self) -> AeRequest | None:
        """The request the next answer must answer (its bounds: `ae_codec.open_ae_response`)."""
        return self._asked

    def start(self) -> AeRequest:
        self._started = True
        self._asked = AeRequest(_shape(self.store.merkle), root=self.store.merkle.root())
        return self._asked

    def hold_pushes(self) -> None:
        """The peer is being repaired by another session (core/ae_lease.py): push nothing more in this one
        (what it lacks that only we hold goes in a later session); keep pulling: the descent goes on, taking
        what the peer holds that we lack, and its version of each key whose version differs from ours (merged
        only where it wins), so whoever holds the peer's lease keeps our pushes away, never our repairs."""
        self.stats.push_held = True
        self._work.push_keys.clear()
        self._work.push_nodes.clear()

    def handle(self, response: AeResponse, now_ms: int, merged: AnswerMerge | None = None) -> AeRequest | None:
        """Digest one response; the next request, or None when the exchange is over. `merged`: its entries
        were merged already, in chunks (`response.entries` is then ignored)."""
        tree = self.store.merkle
        if not self._started or self._asked is None:
            raise AntiEntropyError("handle() before start()")
        _check_shape(tree, response.shape)
        check_answer(self._asked, response)
        stats = self.stats
        if stats.rounds == 0 and response.root == tree.root() and not response.children:
            stats.in_sync = True
        stats.rounds += 1
        stats.truncated |= response.truncated
        if merged is None:
            merged = AnswerMerge(self, _Entries(response.entries))
            merged.step(now_ms, len(response.entries))
        elif not merged.done or merged.session is not self:
            raise ValueError("handle(merged=...) needs this session's AnswerMerge, done")
        # (At most one per entry pushed: the count comes outside the answer's authenticated body.)
        stats.push_refused += min(max(0, response.push_refused), len(self._asked.push))
        for key in response.collected:
            self.store.forget_collected(key, now_ms)
        for children in response.children:
            self._compare_children(children)
        for listing in response.listings:
            self._compare_listing(listing)
        self._asked = None
        if self._work.empty():
            return None
        if stats.rounds >= self.limits.max_rounds:
            stats.truncated = True  # (work left: the next session continues)
            return None
        self._asked = self._next_request()
        return self._asked

    def _compare_children(self, children: Children) -> None:
        tree = self.store.merkle
        level, index = children.node
        if not (0 <= level < tree.depth and 0 <= index < 1 << (tree.bits * level)
                and len(children.hashes) == tree.fanout * HASH_BYTES and len(children.counts) == tree.fanout):
            raise AntiEntropyError(f"malformed children of node {children.node}")
        mine = tree.children(level, index)
        work = self._work
        for i in range(tree.fanout):
            if children.hashes[i * HASH_BYTES:(i + 1) * HASH_BYTES] == mine[i]:
                continue
            child = (level + 1, (index << tree.bits) + i)
            ours, theirs = tree.count(*child), children.counts[i]
            if theirs == 0:
                if not self.stats.push_held:
                    work.push_nodes.append(child)
            elif ours == 0:
                work.want_nodes.append(child)
            elif child[0] == tree.depth or max(ours, theirs) * RECORD_BYTES <= tree.fanout * HASH_BYTES:
                work.listing.append(child)
            else:
                work.descend.append(child)

    def _compare_listing(self, listing: Listing) -> None:
        records = listing.records
        if len(records) % RECORD_BYTES:
            raise AntiEntropyError(f"malformed listing of node {listing.node}")
        theirs = {records[i:i + KEY_ID_BYTES]: records[i + KEY_ID_BYTES:i + RECORD_BYTES]
                  for i in range(0, len(records), RECORD_BYTES)}
        mine: dict[bytes, tuple[str, bytes]] = {}
        for key, khash, digest in self.store.merkle.items_under(*listing.node):
            mine[khash[:KEY_ID_BYTES]] = (key, digest[:DIGEST_ID_BYTES])
        held = self.stats.push_held
        for kid, (key, did) in mine.items():
            theirs_did = theirs.get(kid)
            if theirs_did == did:
                continue
            if not held:
                self._work.push_keys.append(key)  # (the peer sends its own version back when it is newer)
            elif theirs_did is not None:
                self._work.want.append(kid)  # pushes held: take their version (merged only if it is newer)
        for kid in theirs.keys() - mine.keys():
            self._work.want.append(kid)

    def _next_request(self) -> AeRequest:
        work, limits, store = self._work, self.limits, self.store
        budget = limits.max_nodes
        descend, work.descend = work.descend[:budget], work.descend[budget:]
        budget -= len(descend)
        listing, work.listing = work.listing[:budget], work.listing[budget:]
        budget -= len(listing)
        want_nodes, work.want_nodes = work.want_nodes[:budget], work.want_nodes[budget:]
        want, work.want = work.want[:limits.max_want], work.want[limits.max_want:]
        for node in work.push_nodes:
            work.push_keys.extend(key for key, _, _ in store.merkle.items_under(*node))
        work.push_nodes.clear()
        push: list[Entry] = []
        room = limits.max_entry_bytes
        while work.push_keys and len(push) < limits.max_push:
            entry = store.entry(work.push_keys[-1])
            if entry is not None:
                room -= approx_entry_bytes(entry)
                if room < 0 and push:
                    break
                push.append(entry)
            work.push_keys.pop()
        self.stats.pushed += len(push)
        return AeRequest(_shape(store.merkle), descend=tuple(descend), listing=tuple(listing), push=tuple(push),
                         want=tuple(want), want_nodes=tuple(want_nodes))


ANSWER_PARTS = ("children", "listings", "collected keys")


def answer_excess(asked: AeRequest, counts: tuple[int, int, int]) -> str | None:
    """What an answer to `asked` holding `counts` children, listings and collected keys holds more of than
    asked (None: nothing): children of each node asked to descend (and of the root when we sent ours), a
    listing per node asked to list, a collected key per pushed entry. One rule for both checks: the counts in
    an answer's array headers before anything is built (ae_codec.open_ae_response), and a decoded answer
    (`check_answer`, which also checks the nodes and keys it names)."""
    bounds = (len(asked.descend) + (asked.root is not None), len(set(asked.listing)), len(asked.push))
    for name, count, bound in zip(ANSWER_PARTS, counts, bounds, strict=True):
        if count > bound:
            return f"{count} {name}, more than the {bound} asked for"
    return None


def check_answer(asked: AeRequest, response: AeResponse) -> None:
    """Refuse (AntiEntropyError) an answer that answers what `asked` did not ask: more children, listings or
    collected keys than asked (`answer_excess`), children of a node not asked to descend (the root's children
    only when we sent our root), listings of nodes not asked to list, collected keys we did not push."""
    excess = answer_excess(asked, (len(response.children), len(response.listings), len(response.collected)))
    if excess is not None:
        raise AntiEntropyError(f"answer: {excess}")
    descend = set(asked.descend)
    if asked.root is not None:
        descend.add((0, 0))
    if any(c.node not in descend for c in response.children):
        raise AntiEntropyError("answer: children of nodes we did not ask to descend")
    listing = set(asked.listing)
    if any(item.node not in listing for item in response.listings):
        raise AntiEntropyError("answer: listings of nodes we did not ask to list")
    if response.collected:
        pushed = {entry.key for entry in asked.push}
        if any(key not in pushed for key in response.collected):
            raise AntiEntropyError("answer: collected keys we did not push")


class AnswerMerge:
    """An answer's entries decoded and merged a chunk at a time: the driver calls `step` until `done`,
    yielding to its event loop in between, then `session.handle(head, now_ms, merged=this)`. As on the
    responder (`PushMerge`): each merge is a CRDT join, so another write between steps is harmless, and a
    malformed entry further on (the source raises) leaves the ones merged before it valid: the session fails,
    nothing merged is wrong and nothing held is lost."""

    def __init__(self, session: Session, source: EntrySource) -> None:
        self.session = session
        self.source = source
        self._pushed: frozenset[str] | None = None  # the keys the answered request pushed

    @property
    def done(self) -> bool:
        return self.source.remaining <= 0

    def step(self, now_ms: int, count: int = MERGE_CHUNK) -> int:
        """Decode and merge up to `count` more entries (fewer once MERGE_CHUNK_BYTES of them are taken; entries
        the store refuses are skipped); how many changed nothing here."""
        stats, store = self.session.stats, self.session.store
        asked = self.session.asked
        pushed = self._pushed
        if pushed is None:
            pushed = self._pushed = frozenset(e.key for e in asked.push) if asked is not None else frozenset()
        stale = 0
        skipped = self.source.skipped
        for entry in self.source.take(max(1, count)):
            stats.pulled += 1
            try:
                if store.apply_remote(entry, now_ms):
                    stats.repaired += 1
                else:
                    stale += 1
                    # A merge sent back holds ours joined with theirs: if it adds nothing, the peer kept its own.
                    stats.push_refused += entry.key in pushed
            except InvalidEntry:
                stats.refused += 1  # (counted by the store)
        stats.refused += self.source.skipped - skipped  # (counted by the driver: the source's reasons)
        return stale


class _Entries:
    """Entries already decoded, as an EntrySource."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self._entries = entries
        self._next = 0

    @property
    def remaining(self) -> int:
        return len(self._entries) - self._next

    @property
    def skipped(self) -> int:
        return 0  # (decoded already: what a decoder skipped never got here)

    def take(self, count: int) -> Sequence[Entry]:
        out = self._entries[self._next:self._next + count]
        self._next += len(out)
        return out


# -- a local driver (tests, simulator, benchmark) ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExchangeReport:
    rounds: int
    bytes_sent: int       # initiator -> responder
    bytes_received: int   # responder -> initiator
    pushed: int
    pulled: int
    repaired: int
    in_sync: bool
    truncated: bool

    @property
    def bytes_total(self) -> int:
        return self.bytes_sent + self.bytes_received


def exchange(initiator: KvStore, responder: KvStore, now_ms: int, *,
             size_of: Callable[[AeMessage], int] | None = None, limits: Limits = Limits()) -> ExchangeReport:
    """Run a whole session between two in-process replicas; `size_of` (e.g. `ae_codec.encoded_size`)
    accounts the bytes each message would take on the wire."""
    session = Session(initiator, limits)
    sent = received = 0
    request: AeRequest | None = session.start()
    while request is not None:
        response = respond(responder, request, now_ms, limits)
        if size_of is not None:
            sent += size_of(request)
            received += size_of(response)
        request = session.handle(response, now_ms)
    s = session.stats
    return ExchangeReport(s.rounds, sent, received, s.pushed, s.pulled, s.repaired, s.in_sync, s.truncated)
