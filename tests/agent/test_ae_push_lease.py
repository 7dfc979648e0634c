"""One anti-entropy session at a time pushes to a member (core/ae_lease.py, io/state_service.py).

Under a byte budget below the write load, several members ran sessions with the same lagging member at once
and pushed it the same keys: it kept the first copy and discarded the others, each paid from a budget that
was the bottleneck. Now the first pushing session holds the member's push lease; answers to other sessions
say so (`X-Gossip-Ae-Push: held`): those push nothing more (but still pull to their end) and skip that member
for a while (their budget goes to others). Nothing is lost: once the lease is free their next session pushes.
One address cannot keep the lease by making up new session ids: when another address waits, it rests a tenure.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from gossip_agent.core.ae_codec import encode_ae
from gossip_agent.core.ae_lease import PushLease, valid_session_id
from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.core.config import from_mapping
from gossip_agent.core.kvstore import KvStore
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import AE_PATH, AE_PUSH_HEADER, AE_SESSION_HEADER, FRAME, StateService
from tests.hostile.agent_support import with_state

# The lease applies under a byte budget (one large enough not to hold anything back here).
BASE = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
        "gossip": {"maxBytesPerSecond": 10_000_000}}


def test_the_first_pushing_session_holds_the_lease_until_it_goes_quiet() -> None:
    lease = PushLease(hold=3.0)
    assert lease.ask("aaaaaaaa", 0.0, pushing=False)       # pulling takes nothing
    assert lease.ask("bbbbbbbb", 0.5, pushing=True)        # the first to push holds it
    assert not lease.ask("aaaaaaaa", 1.0, pushing=True)    # the others may not push
    assert not lease.ask("aaaaaaaa", 1.0, pushing=False)   # (and are told so while pulling)
    assert lease.ask("bbbbbbbb", 3.0, pushing=True)        # each push renews it: until 6.0
    assert not lease.ask("cccccccc", 5.9, pushing=True)
    assert lease.ask(None, 5.9, pushing=True)              # sessions without an id (older agents) always may
    assert lease.ask("cccccccc", 6.0, pushing=True)        # a quiet holder frees it


def test_no_session_holds_the_lease_for_good() -> None:
    """A session pushing every second, forever, gives the lease up after its tenure (and may not take it
    back at once): the others' sessions are not turned away for good."""
    lease = PushLease(hold=3.0, tenure=10.0)
    t = 0.0
    while t < 10.0:
        assert lease.ask("hoghoghog", t, pushing=True)
        assert not lease.ask("honest01", t + 0.5, pushing=True)
        t += 1.0
    assert not lease.ask("hoghoghog", 10.0, pushing=True)  # tenure over: barred for `hold`
    assert lease.ask("honest01", 10.5, pushing=True)        # the lease is free: another session takes it


def test_a_holder_whose_address_others_wait_behind_rests_one_tenure() -> None:
    """Session ids are the asker's choice: when another address was turned away during a tenure, the holder's
    address (any session id) may not push for `tenure` after it, so the waiting address gets the lease."""
    lease = PushLease(hold=3.0, tenure=10.0)
    for t in range(10):
        assert lease.ask("hoghoghog", t, pushing=True, source="10.0.0.66")
    assert not lease.ask("honest01", 5.5, pushing=True, source="10.0.0.7")       # waits behind it
    assert not lease.ask("fresh0001", 10.0, pushing=True, source="10.0.0.66")    # a new id: still its address
    assert not lease.ask("fresh0002", 12.0, pushing=False, source="10.0.0.66")
    assert lease.ask("honest02", 12.5, pushing=True, source="10.0.0.7")          # the waiting address takes it
    assert lease.ask("honest02", 15.0, pushing=True, source="10.0.0.7")
    assert lease.ask("honest02", 18.0, pushing=True, source="10.0.0.7")          # (holds it until 21.0)
    assert not lease.ask("fresh0003", 19.0, pushing=True, source="10.0.0.66")    # resting (until 20.0), and held
    assert lease.ask("fresh0004", 21.0, pushing=True, source="10.0.0.66")        # rest over, lease quiet: free


def test_agents_sharing_an_address_still_take_turns() -> None:
    """All agents of a loopback cluster ask from 127.0.0.1: without another address waiting, the holder's
    address is not barred, and the next session of that host takes the lease after the tenure."""
    lease = PushLease(hold=3.0, tenure=10.0)
    for t in range(10):
        assert lease.ask("aaaaaaaa", t, pushing=True, source="127.0.0.1")
        assert not lease.ask("bbbbbbbb", t + 0.5, pushing=True, source="127.0.0.1")
    assert not lease.ask("aaaaaaaa", 10.0, pushing=True, source="127.0.0.1")  # its own id: barred for `hold`
    assert lease.ask("bbbbbbbb", 10.5, pushing=True, source="127.0.0.1")      # another agent there: not


def test_a_holder_gone_quiet_before_its_tenure_is_barred_from_nothing() -> None:
    lease = PushLease(hold=3.0, tenure=10.0)
    assert lease.ask("aaaaaaaa", 0.0, pushing=True, source="10.0.0.1")
    assert not lease.ask("bbbbbbbb", 1.0, pushing=True, source="10.0.0.2")
    assert lease.ask("aaaaaaaa", 11.0, pushing=True, source="10.0.0.1")  # (quiet since 3.0: a new lease)


def test_session_ids_are_bounded_input() -> None:
    assert valid_session_id("0123456789abcdef") == "0123456789abcdef"
    for bad in (None, "", "abc", "G" * 16, "a" * 33, "0123456789ABCDEF", "a b c d e f"):
        assert valid_session_id(bad) is None


def _agent(name: str) -> contextlib.AbstractAsyncContextManager[tuple[Agent, StateService]]:
    return with_state({**BASE, "name": name})


async def test_a_member_being_repaired_is_not_pushed_the_same_keys_by_a_second_session() -> None:
    async with _agent("lagging") as (lagging_agent, lagging), _agent("second") as (_, second):
        now = lagging.now_ms()
        for i in range(30):
            second.store.local_put(f"k{i}", b"v" * 100, now)
        lagging.store.local_put("only-here", b"x", now)
        # A key both hold, the lagging member's version the newer one (last writer wins).
        second.store.local_put("both", b"old", now)
        lagging.store.local_put("both", b"new", now + 1000)
        # Another session (its own id) pushes the lagging member one entry: it holds the lease now.
        first = KvStore("first@1", lagging.config.state).local_put("k0", b"v" * 100, now)
        body = FRAME + encode_ae(AeRequest((lagging.store.merkle.bits, lagging.store.merkle.depth), push=(first,)))
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{lagging_agent.port}{AE_PATH}", data=body,
                headers={AE_SESSION_HEADER: "ab" * 8}) as r:
            assert r.status == 200 and AE_PUSH_HEADER not in r.headers
        # The second session is told in its first answer: it pushes nothing (its budget goes to another
        # member, and the lagging member is no partner for a while), but it still pulls to its end: the lease
        # holder keeps its pushes away, never its repairs.
        assert await second.sync_with(("127.0.0.1", lagging_agent.port), "lagging")
        assert second.stats.ae["push_held"] == 1 and second.stats.ae["held"] == 1
        assert lagging.stats.ae["push_held_out"] >= 1 and second.stats.ae["failures"] == 0
        assert second.stats.ae_repaired["pushed"] == 0
        assert lagging.stats.ae_repaired["pushed_in"] == 1 and lagging.stats.ae_repaired["pushed_in_stale"] == 0
        assert "lagging" in second.core._held
        assert second.store.get("only-here") is not None                       # what only the peer held
        assert second.store.get("both").values == (b"new",)  # type: ignore[union-attr]  # (its newer version)
        # Nothing is lost: once the lease is free (its holder quiet), the next session pushes.
        lagging._push_lease.hold = 0.05
        lagging._push_lease.ask("ab" * 8, lagging_agent.now(), pushing=True)
        await asyncio.sleep(0.1)
        assert await second.sync_with(("127.0.0.1", lagging_agent.port))
        assert second.stats.ae_repaired["pushed"] >= 29
        assert lagging.store.merkle.root() == second.store.merkle.root()


async def test_without_a_budget_nobody_is_held_back() -> None:
    """Without a byte budget duplicate pushes cost nothing scarce: no lease."""
    unlimited = {**BASE, "gossip": {"maxBytesPerSecond": 0}}
    svc = StateService(from_mapping({**unlimited, "name": "free"}))
    agent = Agent(svc.config, extensions=[svc])
    await agent.start()
    try:
        svc._push_lease.ask("ab" * 8, agent.now(), pushing=True)  # someone holds it
        other = StateService(from_mapping({**unlimited, "name": "other"}))
        other_agent = Agent(other.config, extensions=[other])
        await other_agent.start()
        try:
            other.store.local_put("k", b"v", other.now_ms())
            assert await other.sync_with(("127.0.0.1", agent.port))
            assert other.stats.ae["push_held"] == 0 and svc.store.get("k") is not None
        finally:
            await other_agent.stop()
    finally:
        await agent.stop()

