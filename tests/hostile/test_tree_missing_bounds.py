"""One member cannot fill the tree's table of announced-but-missing ids (core/plumtree.py `on_ihave`).

Ids cost an announcer nothing: any member (a verified one: since the last session announcements count only
from the member's own host) could announce thousands of ids nobody holds. The table was bounded (MAX_MISSING)
but, once full, every later announcement was ignored without a count, so a payload we really missed waited for
anti-entropy while the junk timed out, and a steady trickle of junk kept it full. Now ids first announced by one
member take at most MAX_MISSING_PER_PEER places (its oldest forgotten past that), the oldest of all go past
MAX_MISSING, and each forgotten id is counted (`tree_missing_evicted`).
"""

from __future__ import annotations

from gossip_agent.core.messages import IHave, Packet
from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE, MAX_MISSING, MAX_MISSING_PER_PEER, Plumtree
from tests.hostile.core_support import lan_node


def _tree() -> Plumtree:
    return Plumtree("me", eager_target=3, lazy_interval=0.4, graft_timeout=0.1)


def _junk(start: int, n: int) -> list[tuple[int, ...]]:
    ids = list(range(start, start + n))
    return [tuple(ids[i:i + MAX_IDS_PER_MESSAGE]) for i in range(0, n, MAX_IDS_PER_MESSAGE)]


def test_one_member_takes_at_most_its_share_and_honest_ids_still_wait() -> None:
    t = _tree()
    evicted = sum(t.on_ihave(batch, "bad", 1.0) for batch in _junk(1, 4 * MAX_MISSING))
    assert t.stats()["missing"] == MAX_MISSING_PER_PEER
    assert evicted == 4 * MAX_MISSING - MAX_MISSING_PER_PEER
    t.on_ihave((10**9, 10**9 + 1), "good", 1.01)
    out = t.tick(1.2)  # past the graft timeout: the honest ids are grafted from their announcer
    assert sorted(out.grafts.get("good", [])) == [10**9, 10**9 + 1]


def test_many_members_fill_the_table_and_the_oldest_ids_go() -> None:
    t = _tree()
    for k in range(8):
        for batch in _junk(1 + k * 10**6, MAX_MISSING_PER_PEER):
            t.on_ihave(batch, f"bad{k}", 1.0)
    assert t.stats()["missing"] == MAX_MISSING
    assert t.on_ihave((10**9,), "good", 1.01) == 1  # room made: the oldest id of all was forgotten
    assert 10**9 in t._missing and 1 not in t._missing
    assert len(t._timers) <= 2 * MAX_MISSING + 1  # the forgotten ids' timers do not pile up


def test_a_peer_flooding_announcements_is_counted_at_the_node() -> None:
    node = lan_node(tree_readers=True)
    addr = node.table.get("p2").addr  # type: ignore[union-attr]
    for batch in _junk(1, MAX_MISSING):
        node.handle_packet(Packet("p2", (IHave(batch),)), addr, 0.1)
    assert node.tree.stats()["missing"] == MAX_MISSING_PER_PEER
    assert node.stats["tree_missing_evicted"] == MAX_MISSING - MAX_MISSING_PER_PEER
