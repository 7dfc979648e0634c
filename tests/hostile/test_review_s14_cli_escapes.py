"""Hostile review, session 14: what gossipctl prints of peer- and user-supplied strings.

Failed before its fix: `--json` output (`get`, `ls`, `watch`, counters, sets, registers, `monitor -o json`) went
through `json.dumps(..., ensure_ascii=False)`, which escapes C0 controls only, so C1 controls (U+009B is a CSI:
"\\x9b2J" clears a terminal as ESC [ 2 J does), DEL and bidirectional controls reached the terminal raw; and the
text outputs escaped C0/C1 controls but not bidirectional ones, which keys may hold (the edge refuses control
characters only): a key holding U+202E printed the rest of its line reversed ("Trojan Source"). Error messages
(which quote keys and what the agent answered), `status` and the monitor's lines were not escaped at all.
Now JSON output escapes them as \\uNNNN (the same JSON for a reader) and text output as \\xNN / \\uNNNN.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

import pytest

import gossip_agent.cli.main as cli_main
from gossip_agent.cli import monitor
from gossip_agent.cli.client import json_text, shown
from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import running

C1 = "\x9b2J"  # CSI 2 J: clears the screen
RLO = "\u202e"  # right-to-left override: what follows prints reversed
HOSTILE = f"a{C1}b{RLO}c\x7fd\u2066e\u2028f"
RAW = ("\x9b", "\u202e", "\x7f", "\u2066", "\u2028", "\x1b")


def _clean(text: str) -> bool:
    return not any(ch in text for ch in RAW)


async def _gossipctl(agent: Agent, *argv: str) -> tuple[int, str, str]:
    """Run gossipctl's main against `agent`: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli_main.main([*argv, "--addr", f"127.0.0.1:{agent.port}"])

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def test_json_output_escapes_c1_del_and_bidi_controls_and_stays_the_same_json() -> None:
    async with running("esc") as agent:
        assert (await _gossipctl(agent, "put", "k", HOSTILE))[0] == 0
        code, out, _ = await _gossipctl(agent, "get", "k", "--json")
        assert code == 0 and _clean(out)
        assert json.loads(out)["values"][0]["value"] == HOSTILE  # a reader gets the very same string
        assert "\\u009b2J" in out and "\\u202e" in out
        assert (await _gossipctl(agent, "put", f"key{RLO}x", "v"))[0] == 0
        code, out, _ = await _gossipctl(agent, "ls", "--json")
        assert code == 0 and _clean(out) and f"key{RLO}x" in [e["key"] for e in json.loads(out)["entries"]]


async def test_text_output_and_errors_escape_bidi_controls() -> None:
    async with running("esc") as agent:
        assert (await _gossipctl(agent, "put", f"key{RLO}x", "v"))[0] == 0
        code, out, _ = await _gossipctl(agent, "ls")
        assert code == 0 and out == "$'key\\xe2\\x80\\xaex'\n"  # quoted for a shell (session 16)
        code, out, err = await _gossipctl(agent, "get", f"nokey{RLO}x")  # the 404 quotes the key
        assert code == 1 and out == "" and _clean(err) and "nokey\\u202ex" in err


def test_watch_and_monitor_lines_are_escaped() -> None:
    event: dict[str, Any] = {"event": "put", "key": f"k{RLO}", "values": [{"value": HOSTILE}], "origin": "local"}
    assert _clean(json_text(event)) and json.loads(json_text(event)) == event
    refute = {"event": "refute", "time": 0, "incarnation": 2, "member": {"name": f"me{C1}{RLO}"}}
    unknown = {"event": "future-kind", "time": 0, "detail": HOSTILE}
    snapshot = {"event": "snapshot", "time": 0, "self": f"me{RLO}",
                "members": [{"name": f"me{RLO}", "address": "x", "port": 1, "state": f"alive{C1}"}],
                "convergence": {"root": f"{RLO}abc", "converged": True}}
    lines = [monitor.format_event(refute), monitor.format_event(unknown), *monitor.format_snapshot(snapshot)]
    assert all(_clean(line) and "\n" not in line for line in lines), lines


def test_status_and_escaping_helpers(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class FakeClient:
        def status(self) -> dict[str, Any]:
            return {"name": f"agent{C1}{RLO}", "members": {"alive": 1}, "state": {"root": "r\u2067"}}

    monkeypatch.setattr(cli_main, "client_from_args", lambda args: FakeClient())
    cli_main.run_status(cli_main.build_parser().parse_args(["status"]))
    out = capsys.readouterr().out
    assert _clean(out) and "agent\\x9b2J\\u202e" in out
    assert shown("plain é ü 日本") == "plain é ü 日本"  # only controls are escaped, not other text
    assert json_text({"k": "é"}) == '{"k": "é"}'
