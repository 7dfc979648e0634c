"""Answers given before the body go to members only (io/peer_ticket.py, io/http_limits.expect_refusal,
io/state_service.py `_ae_head_refusal`).

The anti-entropy endpoint answers "retry later" (429 for a byte budget without room, 503 past its
concurrency cap) before it reads a body: on `Expect: 100-continue` from aiohttp's expect handler, which runs
before the middlewares (so before access control), and otherwise from the guard before it reads the body.
With a keyring a peer request is proved by its sealed body only, so both answered anyone who sent headers:
a cheap answer per connection and the budget's state (`X-Gossip-Retry-After-Ms`: when it refills). Now:
- with a keyring, only a request carrying a valid header ticket (sealed by the keyring, its own purpose,
  this method and path, within the replay window) is answered before its body; any other is read and its
  body authenticated first (a stranger gets the 400 of a body no key opens);
- the expect handler runs the app's access policy first (a TLS CA cluster: no verified client certificate,
  403 before any refusal);
- without a keyring or CA the cluster has no peer authentication: the early answer is as open as a whole
  anti-entropy session (the existing budget tests cover it).
"""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gossip_agent.io import state_service
from gossip_agent.io.auth import ApiAuth
from gossip_agent.io.http_limits import HTTP_STATS, expect_refusal, refuse_before_body
from gossip_agent.io.peer_client import RETRY_AFTER_MS_HEADER
from gossip_agent.io.runtime import Agent
from gossip_agent.io.security import Keyring, Security, generate_key, parse_keyring
from gossip_agent.io.state_service import AE_PATH, StateService
from tests.hostile.agent_support import serving, with_state

BASE = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
        "gossip": {"maxBytesPerSecond": 30_000}}


# The spent agent's budget refills one byte a second. A debt is bounded by one burst (core/send_budget.py), so
# at BASE's 30 KB/s a spent budget had room for an answer again ~1.3 s after its last refill: a test loaded
# past that (a busy 2-core CI machine) got its body read and refused (400) instead of the early 429.
SPENT_GOSSIP = {"maxBytesPerSecond": 1}
# A spent budget must stay spent for longer than any test of this file runs.
SPENT_FOR = 600.0


@contextlib.asynccontextmanager
async def _spent_agent(keyring_file: Path) -> AsyncIterator[tuple[Agent, StateService]]:
    """A keyring agent whose byte budget has no room for an answer for the whole test (every early answer
    would be a 429), however long the machine's load makes the test take."""
    async with with_state({**BASE, "name": "spent", "gossip": SPENT_GOSSIP,
                           "security": {"keyringFile": str(keyring_file)}}) as (agent, svc):
        budget = agent.node.send_budget
        budget.charge_answer(10**9)
        assert budget.answer_room(agent.now()) == 0 and budget.retry_after(agent.now()) > SPENT_FOR
        yield agent, svc


def _early(agent: Agent) -> int:
    """Requests the agent answered before their body."""
    runner = agent._runner
    assert runner is not None
    return int(runner.app[HTTP_STATS]["refused_before_body"])


def _keyring_file(tmp_path: Path, name: str = "keyring") -> Path:
    path = tmp_path / name
    path.write_text(generate_key() + "\n")
    return path


def _security(path: Path, wall: float | None = None) -> Security:
    keyring = Keyring(parse_keyring(path.read_text()))
    return Security(keyring) if wall is None else Security(keyring, wall_clock=lambda: wall)


async def _post(port: int, *, expect: bool, headers: dict[str, str] | None = None,
                body: bytes = b"\xe1" + bytes(64)) -> tuple[int, str | None]:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}{AE_PATH}", data=body, headers=headers or {}, expect100=expect) as r:
        return r.status, r.headers.get(RETRY_AFTER_MS_HEADER)


@pytest.mark.parametrize("expect", [True, False])
async def test_a_stranger_learns_nothing_of_the_budget_before_its_body_fails(tmp_path: Path, expect: bool) -> None:
    """No ticket: the body is read and fails authentication (400); no 429, no refill time."""
    async with _spent_agent(_keyring_file(tmp_path)) as (agent, _):
        status, retry_ms = await _post(agent.port, expect=expect)
        assert (status, retry_ms) == (400, None)
        assert agent.stats.dropped["auth"] >= 1
        assert _early(agent) == 0


async def test_forged_stale_or_misdirected_tickets_count_as_none(tmp_path: Path) -> None:
    from gossip_agent.io.peer_ticket import TICKET_HEADER, make_ticket

    path = _keyring_file(tmp_path)
    other = _security(_keyring_file(tmp_path, "other"))
    async with _spent_agent(path) as (agent, _):
        ours = _security(path)
        stale = _security(path, wall=ours.wall() - 10 * ours.replay_window)
        here = ("127.0.0.1", agent.port)
        for ticket in (make_ticket(other, "POST", AE_PATH, here), make_ticket(stale, "POST", AE_PATH, here),
                       make_ticket(ours, "POST", "/v1/internal/replicate", here), "garbage!!", "A" * 5000):
            assert ticket is not None
            status, retry_ms = await _post(agent.port, expect=True, headers={TICKET_HEADER: ticket})
            assert (status, retry_ms) == (400, None), ticket[:40]
        assert _early(agent) == 0


@pytest.mark.parametrize("expect", [True, False])
async def test_a_member_with_a_ticket_gets_the_early_retry_later(tmp_path: Path, expect: bool) -> None:
    from gossip_agent.io.peer_ticket import TICKET_HEADER, make_ticket

    path = _keyring_file(tmp_path)
    async with _spent_agent(path) as (agent, _):
        ticket = make_ticket(_security(path), "POST", AE_PATH, ("127.0.0.1", agent.port))
        assert ticket is not None
        status, retry_ms = await _post(agent.port, expect=expect, headers={TICKET_HEADER: ticket})
        assert status == 429 and retry_ms is not None
        assert _early(agent) == 1


async def test_a_ticket_sealed_for_another_agent_buys_no_early_answer(tmp_path: Path) -> None:
    """A ticket names the agent it was sealed for (its address as the asker dials it): one captured on its
    way to another member, replayed here within the window, counts as none (the body is read first)."""
    from gossip_agent.io.peer_ticket import TICKET_HEADER, make_ticket

    path = _keyring_file(tmp_path)
    async with _spent_agent(path) as (agent, _):
        for elsewhere in (("127.0.0.1", agent.port + 1), ("10.0.0.9", agent.port)):
            ticket = make_ticket(_security(path), "POST", AE_PATH, elsewhere)
            assert ticket is not None
            status, retry_ms = await _post(agent.port, expect=True, headers={TICKET_HEADER: ticket})
            assert (status, retry_ms) == (400, None), elsewhere
        assert _early(agent) == 0
        advertised = make_ticket(_security(path), "POST", AE_PATH, agent.address)  # what the member table says
        assert advertised is not None
        assert (await _post(agent.port, expect=True, headers={TICKET_HEADER: advertised}))[0] == 429


async def test_an_older_agents_ticket_counts_as_none_and_its_session_goes_on(tmp_path: Path) -> None:
    """Mixed versions: a ticket without a target (sealed by an agent from before targets) opens but names no
    address: the request is read and its body authenticated, then refused (429), not lost."""
    from gossip_agent.io.peer_ticket import TICKET_HEADER
    from gossip_agent.io.security import STAMP_BYTES, Purpose

    path = _keyring_file(tmp_path)
    async with _spent_agent(path) as (agent, _):
        ours = _security(path)
        assert ours.keyring is not None
        stamp = int(ours.wall() * 1000).to_bytes(STAMP_BYTES, "big")
        old = base64.urlsafe_b64encode(ours.keyring.seal(stamp + f"POST {AE_PATH}".encode(),
                                                         Purpose.STREAM_HEAD)).decode()
        body = ours.seal(state_service.FRAME + b"\x90", Purpose.STREAM)
        status, retry_ms = await _post(agent.port, expect=False, headers={TICKET_HEADER: old}, body=body)
        assert status == 429 and retry_ms is not None  # answered after its body was authenticated
        assert _early(agent) == 0


async def test_a_members_session_is_deferred_before_its_body_goes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end between two keyring agents: the peer (its budget spent) refuses the asker's request from
    its ticket, before the body; the session is deferred, not failed."""
    monkeypatch.setattr(state_service, "AE_BUDGET_WAIT", 0.0)  # defer at once
    path = _keyring_file(tmp_path)
    async with _spent_agent(path) as (responder, _), \
            with_state({**BASE, "name": "asker", "security": {"keyringFile": str(path)}}) as (_, svc):
        for i in range(40):  # pushed in the first request past the root: a body over AE_EXPECT_MIN_BODY
            svc.store.local_put(f"k{i}", bytes(200), svc.now_ms())
        assert not await svc.sync_with(("127.0.0.1", responder.port))
        assert svc.stats.ae["deferred"] == 1 and svc.stats.ae["failures"] == 0
        assert _early(responder) >= 1  # refused from the headers: the ticket proved the member


async def test_the_expect_handler_checks_access_before_it_refuses() -> None:
    """A peer route of a TLS CA cluster needs a verified client certificate: a client without one gets 403
    from the expect handler, not the route's "retry later"."""
    from gossip_agent.io.http_limits import API_AUTH  # (new: imported here, so the other tests run on older code)

    def refuse(request: web.Request) -> web.Response | None:
        return web.Response(status=429, headers={RETRY_AFTER_MS_HEADER: "300"})

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="served")

    app = web.Application()
    app[API_AUTH] = ApiAuth(peer_certs_verifiable=True)
    app[HTTP_STATS] = Counter()
    app.router.add_route("POST", AE_PATH, refuse_before_body(refuse, handler), expect_handler=expect_refusal(refuse))
    async with serving(app) as port:
        status, retry_ms = await _post(port, expect=True)
        assert (status, retry_ms) == (403, None)
        assert app[HTTP_STATS]["auth_403"] == 1
