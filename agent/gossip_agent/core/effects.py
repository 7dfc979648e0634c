"""What a core asks its driver to do. The agent runtime performs them with sockets; the simulator with
virtual links. Effects are plain data so tests can assert on them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gossip_agent.core.messages import Address, MemberSnapshot, Packet


@dataclass(frozen=True, slots=True)
class Send:
    """Send one UDP datagram (best effort)."""

    to: Address
    packet: Packet


@dataclass(frozen=True, slots=True)
class SyncWith:
    """Run a push-pull exchange over a stream with `to`: send `Node.push_pull_state(join)`, feed the answer to
    `Node.merge_push_pull`; on failure call `Node.sync_failed` (a failed join attempt is retried from there).
    The responder side is `Node.serve_push_pull`."""

    to: Address
    join: bool


@dataclass(frozen=True, slots=True)
class TcpProbe:
    """Ping `target` over a stream (HTTP) as a last resort; on success call `Node.tcp_probe_ok(seq, now)`."""

    to: Address
    target: str
    seq: int


@dataclass(frozen=True, slots=True)
class JoinSeeds:
    """Resolve the seeds (each attempt anew: DNS records of peers appear as they start) and call
    `Node.join(addresses, now)` with the result, even an empty one (the Node then retries later).
    `rejoin`: we were joined before and lost every peer (for logs and counters)."""

    rejoin: bool


@dataclass(frozen=True, slots=True)
class LeaveDone:
    """Our leave has spread (its rumor is out of our queue, or nobody is left to tell, or the linger time
    passed): stop the process. Emitted once, after `Node.leave`."""


class EventKind(Enum):
    JOIN = "join"          # a member we did not know, alive
    UPDATE = "update"      # address or metadata changed
    SUSPECT = "suspect"
    ALIVE = "alive"        # a suspect refuted, or a dead member back with a higher incarnation
    DEAD = "dead"          # failure confirmed
    LEFT = "left"          # graceful leave
    REAP = "reap"          # removed from the table after reap_after


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A membership change, for logs, metrics and the operator's Events."""

    kind: EventKind
    member: MemberSnapshot


Effect = Send | SyncWith | TcpProbe | MemberEvent | JoinSeeds | LeaveDone
