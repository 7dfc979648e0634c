"""`gossipctl put` says when its write leaves siblings (session 17): the agent's PUT answer carries
`"siblingsMayRemain": true`, `"remaining"`, `"remainingCount"` and `"advice"` when the context names writes it has
not seen (docs/agent-api.md, PUT). gossipctl printed only "ok (N holder(s))", so a read-modify-write at another
agent looked resolved. It now prints a note on stderr (the count, the writes, the advice; names escaped) and still
exits 0: the write was made (the agent answered 2xx), unlike `del`'s NOT deleted (exit 4). `--json` prints the
answer's fields as they are. The kind message's article (core/keys.kind_problem) is checked here too.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from gossip_agent.cli import kv
from gossip_agent.core.keys import kind_problem
from tests.agent.test_registers import Node
from tests.hostile.agent_support import gossipctl_kv as _gossipctl
from tests.hostile.test_s16_honest_delete import _write_unsent, quiet_pair

__all__ = ["quiet_pair"]  # (the fixture, imported for pytest)


async def _token_naming_an_unseen_write(a: Node, key: str) -> str:
    """A context token read at A naming A's newest write of `key`, which B (the other agent) has not seen."""
    await a.json("PUT", f"/v1/kv/{key}?w=2", b"v0")  # both hold v0
    await _write_unsent(a, key, b"v1")
    _, headers, _ = await a.call("GET", f"/v1/kv/{key}?format=json")
    return headers["X-Gossip-Context"]


async def test_gossipctl_put_says_siblings_may_remain_and_exits_0(quiet_pair: list[Node],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a, b = quiet_pair
    token = await _token_naming_an_unseen_write(a, "carts/cli")
    code = await asyncio.to_thread(_gossipctl, ["put", "--addr", f"127.0.0.1:{b.agent.port}", "--context", token,
                                                "carts/cli", "mine"])
    out, err = capsys.readouterr()
    assert code == 0 and out == "ok (1 holder(s))\n", (code, out)
    assert "note:" in err and "1 write(s)" in err and "stay as siblings" in err, err
    assert f"{a.svc.store.node}:2" in err and "write back" in err, err
    # --json: the answer's fields as they are on stdout (the note on stderr too); the exit status stays 0.
    token = await _token_naming_an_unseen_write(a, "carts/json")
    code = await asyncio.to_thread(_gossipctl, ["put", "--json", "--addr", f"127.0.0.1:{b.agent.port}",
                                                "--context", token, "carts/json", "mine"])
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert code == 0 and answer["siblingsMayRemain"] is True and answer["remainingCount"] == 1, answer
    assert answer["remaining"] == [{"node": a.svc.store.node, "counter": 2}] and "advice" in answer
    assert "stay as siblings" in err
    # A put whose token the agent covers (read there), or without one, says nothing more than before.
    _, headers, _ = await a.call("GET", "/v1/kv/carts/json?format=json")
    for extra in (["--context", headers["X-Gossip-Context"]], []):
        code = await asyncio.to_thread(_gossipctl, ["put", "--addr", f"127.0.0.1:{a.agent.port}", *extra,
                                                    "carts/json", "resolved"])
        assert (code, *capsys.readouterr()) == (0, "ok (1 holder(s))\n", "")


def test_the_note_escapes_names_and_counts_what_is_not_listed(capsys: pytest.CaptureFixture[str]) -> None:
    kv._note_siblings_remain("k\x1b[31m", {"siblingsMayRemain": True, "remainingCount": 70, "advice": "a\u202eb",
                                           "remaining": [{"node": "w\x1b]0;x\x07@1", "counter": 3}]})
    err = capsys.readouterr().err
    assert "$'k\\x1b[31m'" in err and "w\\x1b]0;x\\x07@1:3 (and 69 more)" in err and "70 write(s)" in err, err
    assert "\x1b" not in err and "\u202e" not in err
    kv._note_siblings_remain("k", {"key": "k", "siblings": 1})
    assert capsys.readouterr().err == ""


def test_kind_problem_uses_the_right_article() -> None:
    assert "holds an orset;" in (kind_problem("plain/x", "orset") or "")
    assert "hold an orset only" in (kind_problem("crdt/sets/x", "pncounter") or "")
    assert "holds a pncounter;" in (kind_problem("crdt/sets/x", "pncounter") or "")


@pytest.mark.parametrize("answer", [
    {"siblingsMayRemain": True, "remaining": 5},
    {"siblingsMayRemain": True, "remaining": True, "remainingCount": True},
    {"siblingsMayRemain": True, "remaining": "xx", "remainingCount": "7"},
    {"siblingsMayRemain": True, "remaining": [{"node": "n", "counter": i} for i in range(10_000)]},
    [], "ok", 3,
])
def test_the_note_never_fails_on_a_hostile_answer(answer: object, capsys: pytest.CaptureFixture[str]) -> None:
    """Review: the write is made whatever the agent's answer holds, so the note prints (at most 64 writes) and
    never raises: `"remaining": 5` raised TypeError, and gossipctl exited 1 after a write that succeeded."""
    kv._note_siblings_remain("k", answer)
    err = capsys.readouterr().err
    assert "True write(s)" not in err
    assert err.count(":") <= 64 + 10  # (the listed writes: at most 64)
