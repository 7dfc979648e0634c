"""Hostile review, session 13, F6: OR-set elements with control characters.

Failed before its fix: keys refused control characters at the HTTP edge but set elements did not, and
`gossipctl set get` printed elements raw: an escape sequence reached the terminal, and an element holding a
newline printed as forged extra elements. Now adding such an element is a 400 naming it (the same rule and
wording as keys, `control_char_problem`); removing one stays allowed, so elements stored before the check
can be cleaned up; and gossipctl escapes what it lists one a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io

import aiohttp
import pytest

from gossip_agent.core.crdt import ORSet
from gossip_agent.io.state_http import SETS, key_problem
from gossip_agent.io.state_service import StateService
from tests.hostile.agent_support import gossipctl_kv, running, url

FORGED = "x\x1b[2J\nfake-element"


def _gossipctl(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert gossipctl_kv(argv) == 0
    return out.getvalue()


async def test_a_set_element_with_a_control_character_is_refused_like_a_key() -> None:
    async with running("set") as agent, aiohttp.ClientSession() as http:
        async with http.post(url(agent, "/v1/crdt/sets/team"), json={"add": ["ann", FORGED]}) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert error == "add[1] contains the control character U+001B at position 1; set elements are printable text"
        assert key_problem(FORGED) == "key contains the control character U+001B at position 1; keys are printable text"
        async with http.get(url(agent, "/v1/crdt/sets/team")) as r:
            assert (await r.json())["elements"] == []  # nothing of the request was applied
        for nul in ("\x00", "a\x7f", "\x9b"):  # NUL, DEL, a C1 control (CSI)
            async with http.post(url(agent, "/v1/crdt/sets/team"), json={"add": [nul]}) as r:
                assert r.status == 400, nul


async def test_an_element_stored_before_the_check_can_be_removed_and_is_printed_escaped() -> None:
    async with running("old") as agent, aiohttp.ClientSession() as http:
        svc = next(e for e in agent.extensions if isinstance(e, StateService))
        # As an agent without the check (or a peer) left it: straight into the store.
        svc.update_crdt(SETS + "team", ORSet, lambda s, node, _: s.update(node, ["ann", FORGED]), "set")
        addr = ["--addr", f"127.0.0.1:{agent.port}"]
        printed = await asyncio.to_thread(_gossipctl, ["set", "get", *addr, "team"])
        # Two elements, two lines, no escape sequence; the hostile one quoted for a shell (session 16).
        assert printed == "ann\n$'x\\x1b[2J\\x0afake-element'\n"
        async with http.post(url(agent, "/v1/crdt/sets/team"), json={"remove": [FORGED]}) as r:
            assert r.status == 200 and (await r.json())["elements"] == ["ann"]


@pytest.mark.parametrize("element", ["plain", "tab\tinside"])
def test_printing_escapes_only_control_characters(element: str) -> None:
    from gossip_agent.cli.client import shown
    assert shown(element) == element.replace("\t", "\\x09")
