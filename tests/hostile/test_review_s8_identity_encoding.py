"""Review (session 8): `Content-Encoding: identity` (no encoding at all, RFC 9110) does not skip the refusal of
an oversized write before its body (io/state_http.py `_check_length`).

The length check was skipped whenever the header was present, since a compressed body's length says nothing
of what it inflates to; but "identity" is read as no encoding by the guard, so a client adding that header got
its 1 MiB value (over state.maxValueBytes) read whole before the 413, and a body that never finished held the
request until the body timeout, as before this session's fix."""

from __future__ import annotations

from tests.hostile.agent_support import answer_head
from tests.hostile.test_writes_refused_before_body import DECLARED, agent

__all__ = ["agent"]


async def test_an_identity_encoded_value_over_the_limit_is_refused_before_its_body(agent: object) -> None:
    head = await answer_head(agent.port,  # type: ignore[attr-defined]
                             f"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                             f"Content-Encoding: identity\r\nContent-Length: {DECLARED}\r\n\r\n".encode() + b"x" * 16,
                             timeout=10.0)  # the answer needs none of the missing bytes
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
