"""An idle agent does not import what only rarely used paths need (each such import costs every agent RSS).

Two agents with the key-value state layer join on loopback and stop, in a fresh interpreter, which then names the
modules below it imported. Each is imported where it is first needed; the comment there says why.
"""

from __future__ import annotations

import json
import subprocess
import sys

# module -> where it is imported lazily
DEFERRED = {
    "decimal": "core/config.py format_duration (odd durations only)",
    "sortedcontainers": "core/kvstore.py KvStore._sorted (the first key order asked for)",
    # The loop's default executor (its worker thread) and the idna codec: io/seeds.py address_info asks getaddrinfo
    # on the loop for an IP literal (the bind address, here 127.0.0.1); only a name needs them.
    "concurrent.futures.thread": "io/seeds.py address_info (a name's getaddrinfo, on the loop's executor)",
    "encodings.idna": "io/seeds.py address_info (a name's getaddrinfo encodes it with the idna codec)",
    "ctypes": "nowhere: io/runtime.py settle_memory no longer calls malloc_trim (see there)",
}

_SCRIPT = """
import asyncio, json, sys
from gossip_agent.core.config import from_mapping
from gossip_agent.io.extension import default_extensions
from gossip_agent.io.runtime import Agent, settle_memory

FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0,
        "membership": {"probeInterval": "300ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}

def make(name, seeds):
    config = from_mapping({**FAST, "name": name, "seeds": seeds})
    return Agent(config, extensions=default_extensions(config))

async def main():
    a0 = make("a0", [])
    await a0.start()
    a1 = make("a1", [f"127.0.0.1:{a0.port}"])
    await a1.start()
    settle_memory()  # as Agent.run does after start
    try:
        for _ in range(600):  # both see both (at most 60 s on a busy machine)
            if all(len([m for m in a.members() if m.state.name == "ALIVE"]) == 2 for a in (a0, a1)):
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the agents did not see each other")
    finally:
        await a1.stop()
        await a0.stop()

asyncio.run(main())
print(json.dumps(sorted(m for m in MODULES if m in sys.modules)))
"""


def test_an_idle_agent_does_not_import_deferred_modules() -> None:
    code = f"MODULES = {sorted(DEFERRED)!r}\n" + _SCRIPT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == [], {m: DEFERRED[m] for m in imported}


# A write on one agent reaches the other, through the HTTP API: the state layer under -OO as well.
_OPTIMIZED = _SCRIPT.replace("""    finally:
        await a1.stop()""", """        import aiohttp
        async with aiohttp.ClientSession() as http:
            async with http.put(f"http://127.0.0.1:{a0.port}/v1/kv/k", data=b"v") as r:
                assert r.status in (200, 201, 204), r.status
            for _ in range(600):
                async with http.get(f"http://127.0.0.1:{a1.port}/v1/kv/k") as r:
                    if r.status == 200 and await r.read() == b"v":
                        break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("the write did not reach the other agent")
    finally:
        await a1.stop()""")


def test_agents_run_optimized_as_the_image_runs_them() -> None:
    """Dockerfile.agent runs the agent with PYTHONOPTIMIZE=2 (-OO: no docstrings, no asserts; ~1.7 MiB less
    resident). Two agents start, join and replicate a write so: nothing of ours or of the libraries it imports may
    need a docstring or an assert's side effect."""
    assert _OPTIMIZED != _SCRIPT
    code = "MODULES = []\n" + _OPTIMIZED
    out = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
