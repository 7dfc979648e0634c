"""Review (session 8): a "retry later" after the body was read must not give the body back to the budget.

Under a byte budget an agent sends a large anti-entropy request with `Expect: 100-continue`, and on a 429/503
gives the body's bytes back to its send budget (io/state_service.py `_ae_round`), on the grounds that the
peer refused before the body went. That holds only for a peer whose expect handler refuses
(io/http_limits.expect_refusal). A peer of the previous release (aiohttp's default expect handler: "100
Continue", then the body is read, then 429), a peer whose budget ran out while the body arrived (`_serve_ae`
checks again), or a hostile one, got the whole body, and the asker refunded it anyway: every such retry
(every 0.25 s at least) sent a body its budget never paid for. The code's own comment says such a body is
"not given back".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gossip_agent.core.ae_codec import encode_ae
from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.io import state_service
from gossip_agent.io.peer_client import PeerBusy
from tests.hostile.agent_support import serving, with_state


@pytest.fixture
async def older_peer() -> AsyncIterator[tuple[int, list[int]]]:
    """An agent of the previous release, as far as this matters: it reads the body, then says 429."""
    got: list[int] = []

    async def ae(request: web.Request) -> web.Response:
        got.append(len(await request.read()))
        return web.Response(status=429, text="retry later",
                            headers={"Retry-After": "1", "X-Gossip-Retry-After-Ms": "300"})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post(state_service.AE_PATH, ae)
    async with serving(app) as port:
        yield port, got


async def test_a_body_the_peer_read_before_its_429_stays_charged(
        older_peer: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    port, got = older_peer
    config = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "name": "asker",
              "antiEntropy": {"enabled": False}, "gossip": {"maxBytesPerSecond": 30_000}}
    async with with_state(config) as (agent, svc):
        monkeypatch.setattr(state_service, "AE_BUDGET_WAIT", 0.0)  # one request, then the deferral
        entries = tuple(svc.store.local_put(f"k{i}", b"v" * 100, svc.now_ms()) for i in range(50))
        body = encode_ae(AeRequest((svc.store.merkle.bits, svc.store.merkle.depth), push=entries))
        assert len(body) >= state_service.AE_EXPECT_MIN_BODY  # sent with Expect: 100-continue
        sent, tokens = svc.stats.ae_bytes["sent"], agent.node.send_budget.tokens
        with pytest.raises(PeerBusy):
            await svc._ae_round(("127.0.0.1", port), body)
        assert got and got[0] >= len(body)  # the peer read the whole body before its 429
        assert svc.stats.ae_bytes["sent"] >= sent + len(body)
        # The body went on the wire: our budget keeps it charged (give or take what refilled meanwhile).
        assert agent.node.send_budget.tokens <= tokens - len(body) + 3_000
