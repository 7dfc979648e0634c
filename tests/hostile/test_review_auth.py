"""Hostile-input review of API tokens (issue 10). Failed before its fix: emptying the token file to revoke every
token kept all the old tokens working, silently (a broken file keeps them, and says so; an empty file is not
broken, it says "no tokens")."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gossip_agent.io.auth import Scope, TokenFile, generate_token


def test_an_emptied_token_file_revokes_every_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    token = generate_token()
    path.write_text(f"write:{token}\n")
    now = [0.0]
    tokens = TokenFile(str(path), clock=lambda: now[0])
    assert tokens.scope_of(token) is Scope.WRITE
    path.write_text("# all revoked\n")
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time granularity
    now[0] += 5
    with caplog.at_level(logging.ERROR):
        assert tokens.scope_of(token) is None
    assert "holds no tokens" in caplog.text
    path.write_text("broken line\n")  # a broken file still keeps what was there (here: nothing)
    os.utime(path, ns=(2, 2))
    now[0] += 5
    assert tokens.scope_of(token) is None
    fresh = generate_token()
    path.write_text(f"read:{fresh}\n")
    os.utime(path, ns=(3, 3))
    now[0] += 5
    assert tokens.scope_of(fresh) is Scope.READ
