"""The member table and SWIM's precedence rules for rumors about a member.

Rules (SWIM §4.2, memberlist `state.go`): a rumor about a member wins only with a higher incarnation, or the
same incarnation and a "worse" state (alive < suspect < dead); left and dead are final for an incarnation.
Only the member itself raises its incarnation (to refute a suspicion, or to announce new metadata).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gossip_agent.core.messages import Address, MemberSnapshot, MemberState
from gossip_agent.core.probe_schedule import ring_key

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


@dataclass(slots=True)
class Member:
    name: str
    addr: Address
    incarnation: int
    state: MemberState
    meta: Mapping[str, str] = field(default_factory=dict)
    # When `state` last changed: drives reaping of dead/left members and gossip to the recently dead.
    state_since: float = 0.0

    def snapshot(self) -> MemberSnapshot:
        return MemberSnapshot(self.name, self.addr, self.incarnation, self.state, self.meta)


def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode())


class MemberTable:
    """Members by name, with counts and a digest of the alive set kept up to date so views are O(1).

    The digest is the XOR of crc32(name) over alive members: two members with the same digest almost surely
    agree on who is alive, whatever order they learned it in. Incarnations and metadata stay out of it, so
    a metadata update (e.g. a new state root) does not make views look different.

    It also keeps the probe ring: live members ordered by `ring_key`, rebuilt lazily after the live set changed.
    """

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._counts = dict.fromkeys(MemberState, 0)
        self.digest = 0
        self._keys: dict[str, int] = {}
        self._ring: list[tuple[int, str]] = []
        self._ring_stale = False

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members.values())

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def get(self, name: str) -> Member | None:
        return self._members.get(name)

    def add(self, member: Member) -> None:
        assert member.name not in self._members
        self._members[member.name] = member
        self._keys[member.name] = ring_key(member.name)
        self._counts[member.state] += 1
        if member.state == MemberState.ALIVE:
            self.digest ^= _name_hash(member.name)
        if member.state in _LIVE:
            self._ring_stale = True

    def set_state(self, member: Member, state: MemberState, now: float) -> None:
        if member.state != state:
            self._counts[member.state] -= 1
            self._counts[state] += 1
            if (member.state == MemberState.ALIVE) != (state == MemberState.ALIVE):
                self.digest ^= _name_hash(member.name)
            if (member.state in _LIVE) != (state in _LIVE):
                self._ring_stale = True
            member.state = state
            member.state_since = now

    def remove(self, name: str) -> Member | None:
        member = self._members.pop(name, None)
        if member is not None:
            del self._keys[name]
            self._counts[member.state] -= 1
            if member.state == MemberState.ALIVE:
                self.digest ^= _name_hash(member.name)
            if member.state in _LIVE:
                self._ring_stale = True
        return member

    def ring(self) -> list[tuple[int, str]]:
        """Live members as (ring key, name), in ring order. Do not modify."""
        if self._ring_stale:
            keys = self._keys
            self._ring = sorted((keys[name], name) for name, m in self._members.items() if m.state in _LIVE)
            self._ring_stale = False
        return self._ring

    def ring_key(self, name: str) -> int | None:
        return self._keys.get(name)

    def counts(self) -> dict[MemberState, int]:
        return dict(self._counts)

    def is_live(self, name: str) -> bool:
        """Alive or suspect: a member that counts toward "every member has heard it"."""
        member = self._members.get(name)
        return member is not None and member.state in _LIVE

    @property
    def n_alive(self) -> int:
        """Alive members (self included while we are alive)."""
        return self._counts[MemberState.ALIVE]

    @property
    def n_live(self) -> int:
        """Members that count for timeouts and retransmit limits: alive or suspect (self included)."""
        return self._counts[MemberState.ALIVE] + self._counts[MemberState.SUSPECT]
