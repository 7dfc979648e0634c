"""Session 16: gossipctl prints a hostile key so that pasting it into a shell gives the key back.

Failed before the fix: `ls`, `watch` and `set get` printed a key (or element) holding a control or bidirectional
character with `shown`'s escapes (`a\\x1bb`, `k\\u202e`): safe on a terminal, but pasted into the next command
(`gossipctl get 'a\\x1bb'`) it is another key, a literal backslash and letters. Now such a key prints as bash's
`$'a\\x1bb'` (`cli.client.shell_word`), which bash reads as the key itself; so does a printable key that a shell
would act on (spaces, `$`, quotes, globs); keys of letters, digits and `_.,/:@%+=-` print as they are.

Each case is checked by bash itself: the printed word, pasted into `printf %s`, gives back the key's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import subprocess

import pytest

import gossip_agent.cli.main as cli_main
from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import running

HOSTILE = ["a\x1b[2Jb", "x\u202ey", "it's \\ \x07", "\x85z", "a\nb", "k\u200bz", "\u2066é\u2069", "\x7f'"]
PLAIN = ["plain/key", "é-ü_日本", "user@host:8080/a,b=c+d%"]
# Printable, but a shell acts on them (expansion, command substitution, quoting, splitting, globs): printed raw,
# a pasted `x$(touch f)` ran `touch` (review).
SHELL_ACTIVE = ["a b", "$HOME", "it's", "x$(touch /nonexistent/f)", "`id`", "*", "~", "a;b", "!!", 'q"q', "a\\b", "=ls"]

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _bash_reads(word: str) -> bytes:
    """What bash makes of `word` pasted as an argument."""
    return subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True, timeout=30).stdout


@needs_bash
@pytest.mark.parametrize("key", HOSTILE)
def test_a_key_with_unprintable_characters_is_quoted_so_bash_reads_it_back(key: str) -> None:
    from gossip_agent.cli.client import shell_word  # (here: the gossipctl test runs against older builds too)

    word = shell_word(key)
    assert word.startswith("$'") and word.endswith("'")
    assert word.isprintable()  # nothing a terminal acts on (no control, bidi or line separator left raw)
    assert _bash_reads(word) == key.encode()  # before the fix, shown()'s text: another key


@needs_bash
@pytest.mark.parametrize("key", SHELL_ACTIVE)
def test_a_key_a_shell_acts_on_is_quoted_so_bash_reads_it_back(key: str) -> None:
    from gossip_agent.cli.client import shell_word

    word = shell_word(key)
    assert word.startswith("$'") and word.endswith("'")
    assert _bash_reads(word) == key.encode()  # before the fix, printed raw: run or changed by the shell


@pytest.mark.parametrize("key", PLAIN)
def test_a_printable_key_prints_as_it_is(key: str) -> None:
    from gossip_agent.cli.client import shell_word

    assert shell_word(key) == key


async def _gossipctl(agent: Agent, *argv: str) -> tuple[int, str]:
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            return cli_main.main([*argv, "--addr", f"127.0.0.1:{agent.port}"])

    code = await asyncio.to_thread(run)
    return code, out.getvalue()


@needs_bash
async def test_ls_and_set_get_print_words_that_paste_back_into_the_key() -> None:
    # Keys may not hold control characters (the edge refuses them), bidirectional and format ones they may.
    key, element = "keys/a\u202eb\u2028c\u200bd", "el\u2067x\u200b"
    async with running("shellwords") as agent:
        assert (await _gossipctl(agent, "put", key, "v"))[0] == 0
        assert (await _gossipctl(agent, "put", "keys/plain", "v"))[0] == 0
        code, out = await _gossipctl(agent, "ls", "keys/")
        assert code == 0 and out.isprintable() is False  # (newlines between lines)
        lines = out.splitlines()
        assert lines[1] == "keys/plain" and all(line.isprintable() for line in lines)
        assert (await asyncio.to_thread(_bash_reads, lines[0])).decode() == key
        assert (await _gossipctl(agent, "set", "add", "s", element, "plain"))[0] == 0
        code, out = await _gossipctl(agent, "set", "get", "s")
        words = out.splitlines()
        assert code == 0 and "plain" in words and all(word.isprintable() for word in words)
        pasted = [(await asyncio.to_thread(_bash_reads, word)).decode() for word in words]
        assert sorted(pasted) == sorted([element, "plain"])
