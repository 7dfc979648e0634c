"""Push-pull sync: the full membership views two members swap over a stream (memberlist's pushPull).

With seeds on join, with a random member every push-pull interval (scaled down past 32 members), and after a
probe's ack showed our views differ: it repairs whatever rumors missed. The driver runs the stream; the Node
builds its view, answers a peer's, and merges what comes back, where dead or suspect rows count as
suspicions only (a newcomer's stale view must not kill anyone).
"""

from __future__ import annotations

import math

from gossip_agent.core.effects import Effect
from gossip_agent.core.messages import Alive, Dead, MemberState, PushPullState, Rumor, Suspect
from gossip_agent.core.node_base import NEVER, NodeBase


def split_push_pull(state: PushPullState, rows: int | None) -> list[PushPullState]:
    """`state` in parts of at most `rows` rows (one part without a bound); merging the parts in order is
    merging the whole."""
    members = state.members
    if rows is None or len(members) <= rows:
        return [state]
    return [PushPullState(state.sender, members[i:i + rows], state.join) for i in range(0, len(members), rows)]


class PushPullSync(NodeBase):
    """The Node's side of a push-pull exchange: its view, the answer to a peer's, and the merge."""

    def push_pull_state(self, join: bool) -> PushPullState:
        return PushPullState(self.name, tuple(m.snapshot() for m in self.table), join)

    def serve_push_pull(self, remote: PushPullState, *,
                        chunk_rows: int | None = None) -> tuple[PushPullState, list[PushPullState]]:
        """A peer's push-pull reached us: (our answer, the merges to run), in memberlist's order. The answer is
        our view from *before* merging theirs: the initiator learns what we knew, and its own rows are not
        echoed back to it. Feed each returned part to `merge_push_pull`, in order; with `chunk_rows` the view
        comes in parts of that many rows, so a driver can yield between them (a forged view of thousands of
        rows must not stall the event loop)."""
        return self.push_pull_state(False), split_push_pull(remote, chunk_rows)

    def merge_push_pull(self, remote: PushPullState, now: float, *, source_host: str | None = None) -> list[Effect]:
        """Merge a full membership view. Dead or suspect rows count as suspicions only: we let the member
        refute, as a newcomer's stale view must not kill anyone. `source_host`: the host the stream came from
        (its connection proves it), when the driver knows it; a joiner's digest table goes only there."""
        out: list[Effect] = []
        for row in remote.members:
            known = self.table.get(row.name)
            if known is not None and row.name != self.name and (
                    row.incarnation < known.incarnation
                    or (row.incarnation == known.incarnation and (row.state == known.state
                                                                  or row.state == MemberState.ALIVE))):
                continue  # nothing new in this row: skip building a rumor for it
            rumor: Rumor
            if row.state == MemberState.ALIVE:
                rumor = Alive(row.name, row.incarnation, row.addr, row.meta)
            elif row.state == MemberState.LEFT:
                rumor = Dead(row.name, row.incarnation, row.name)
            else:
                rumor = Suspect(row.name, row.incarnation, remote.sender)
            self._apply_rumor(rumor, now, remote.sender, out)
        self._refuted = False  # the stream exchange itself carries our refutation back
        if remote.join and any(row.name == remote.sender for row in remote.members):
            # A joiner's view (its own row is in one part only, so this runs once per join): push-pull's
            # stream format has no room for digests that older agents would read, so they follow by UDP.
            self._send_digest_table(remote.sender, now, out, source_host)
            self._send_coordinate_table(remote.sender, now, out, source_host)
        return out

    def _push_pull_interval(self) -> float:
        """memberlist's pushPullScale: sync less often past 32 members, so the total rate stays flat."""
        base = self.config.gossip.push_pull_interval
        if not base:
            return NEVER
        n = self.table.n_live
        if n <= 32:
            return base
        return base * (math.ceil(math.log2(n) - math.log2(32)) + 1)
