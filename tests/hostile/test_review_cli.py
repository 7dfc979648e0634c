"""Hostile-input review of gossipctl's output. Failed before the fix: metadata values (any peer sets its own, and
they reach every agent) were printed raw by `gossipctl members -o wide` and `gossipctl monitor`, so escape
sequences in them could clear the terminal, set its title or forge lines."""

from __future__ import annotations

from typing import Any

import pytest

import gossip_agent.cli.main as cli_main
from gossip_agent.cli import monitor
from gossip_agent.cli.main import build_parser, run_members

EVIL = "\x1b[2J\x1b]0;pwned\x07\nfake-member  10.0.0.1:1  alive  1"


class FakeClient:
    def members(self) -> list[dict[str, Any]]:
        return [{"name": "a", "address": "127.0.0.1", "port": 1, "state": "alive", "incarnation": 1,
                 "meta": {"role": EVIL}}]


def test_members_wide_never_prints_control_characters(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli_main, "client_from_args", lambda args: FakeClient())
    run_members(build_parser().parse_args(["members", "-o", "wide"]))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert len(out.splitlines()) == 2  # the header and one member: no forged line
    assert "\\x1b[2J" in out


def test_monitor_lines_never_carry_control_characters() -> None:
    line = monitor._meta({"role": EVIL}) + monitor._member({"name": "a\x1b[31m", "address": "x", "port": 1})
    assert "\x1b" not in line and "\n" not in line and "\x07" not in line
