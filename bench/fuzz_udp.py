"""Long fuzz run of the UDP side (issue 10): structured, boundary-valued packets, millions of them.

CI runs the hypothesis version (tests/hostile/test_peer_fuzz.py, 44,800 inputs) and this generator over
220,000 inputs (`fuzz_in_process`, tests/hostile/test_fuzz_volume.py, slow group). This script is the long
run, not in CI:

    .venv/bin/python bench/fuzz_udp.py --inputs 10000000                 # in-process: codec + Node, ~1-2 h
    .venv/bin/python bench/fuzz_udp.py --inputs 300000 --agent            # also over UDP into a real agent

In-process, every input goes through `codec.decode_packet`; what decodes is re-encoded (must round-trip) and
fed to a Node whose outgoing packets must encode. Any other exception is a crash: printed with its input and
counted (exit status 1). With `--agent`, the same inputs are also sent to a real agent on 127.0.0.1 (a
plaintext 2-agent cluster, started here and stopped at the end), and its RSS and event-loop lag
(gossip_event_loop_lag_max_seconds) are sampled: both must stay bounded, and it must still be alive, ready,
and see its peer at the end. The generator is plain `random` (seeded, reproducible with --seed): hypothesis
would take days for 10M inputs.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gossip_agent.core import codec  # noqa: E402
from gossip_agent.core.config import AgentConfig  # noqa: E402
from gossip_agent.core.effects import Send  # noqa: E402
from gossip_agent.core.node import Node  # noqa: E402

EDGES = [0, 1, 2**7, 2**8 - 1, 2**8, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 2**32, 2**53 - 1, 2**53, 2**53 + 1,
         2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1, -1, -(2**31), -(2**63)]
TEXTS = ["", "a", "é" * 64, "a" * 253, "a" * 254, "x" * 300, "host\x00", "-bad", "::1", "127.0.0.1", "fe80::1%eth0",
         "exa mple", "a..b", "ünïcode.example", ".", "agent-0.agents.default.svc", "localhost", "10.0.0.1"]


def gen_int(r: random.Random) -> int:
    if r.random() < 0.7:
        return r.choice(EDGES) + r.choice((0, 0, 0, -1, 1))
    return r.randint(-(2**63), 2**64 - 1)


def gen_text(r: random.Random) -> str:
    if r.random() < 0.7:
        return r.choice(TEXTS)
    return "".join(chr(r.randint(0, 0x2FFF)) for _ in range(r.randint(0, 20)))


def gen_scalar(r: random.Random) -> Any:
    kind = r.random()
    if kind < 0.35:
        return gen_int(r)
    if kind < 0.7:
        return gen_text(r)
    if kind < 0.8:
        return r.random() < 0.5
    if kind < 0.9:
        return r.randbytes(r.randint(0, 16))
    return None if r.random() < 0.5 else r.random()


# Per message type, the kind of each field: most inputs are well-formed but for one or two boundary values,
# which is what gets past the decoder's shape checks and reaches the Node.
SHAPES = {0: "utthu", 1: "uu", 2: "u", 3: "uthutthub", 4: "tuhum", 5: "tut", 6: "tut", 7: "y", 8: "thu"}
HOSTS = ["127.0.0.1", "10.0.0.1", "::1", "agent-0.agents.default.svc", "localhost"]


def gen_field(r: random.Random, kind: str) -> Any:
    roll = r.random()
    if roll < 0.1:
        return gen_scalar(r)
    if kind == "u":
        return gen_int(r) if roll < 0.5 else r.randint(0, 2**16)
    if kind == "t":
        return gen_text(r) if roll < 0.4 else f"m{r.randint(0, 5000)}"
    if kind == "h":
        return gen_text(r) if roll < 0.3 else r.choice(HOSTS)
    if kind == "b":
        return r.random() < 0.5
    if kind == "m":
        return {gen_text(r): gen_text(r) for _ in range(r.randint(0, 3))}
    return r.randbytes(r.randint(0, 64))


def gen_message(r: random.Random) -> list[Any]:
    kind = r.randint(0, 8) if r.random() < 0.97 else gen_int(r)
    shape = SHAPES.get(kind, "ttt") if isinstance(kind, int) else "ttt"
    fields = [gen_field(r, k) for k in shape]
    if r.random() < 0.03:
        fields = fields[:-1] if r.random() < 0.5 else [*fields, gen_scalar(r)]
    return [kind, *fields]


def gen_packet(r: random.Random) -> bytes | None:
    obj = [gen_text(r) if r.random() < 0.9 else gen_scalar(r),
           [gen_message(r) for _ in range(r.choice((0, 1, 1, 1, 2, 3, 6)))] if r.random() < 0.95 else gen_scalar(r)]
    try:
        data: bytes = bytes((codec.VERSION,)) + msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return None
    if r.random() < 0.02 and data:  # a few byte-level mutations of well-formed packets
        pos = r.randrange(len(data))
        data = data[:pos] + bytes((r.randrange(256),)) + data[pos + 1:]
    return data


def check_one(node: Node, data: bytes, now: float) -> bool:
    """True if `data` decoded (and everything after held)."""
    try:
        packet = codec.decode_packet(data)
    except codec.DecodeError:
        return False
    if codec.decode_packet(codec.encode_packet(packet)) != packet:
        raise AssertionError("decoded packet does not round-trip")
    for effect in node.handle_packet(packet, ("127.0.0.1", 1), now) + node.tick(now):
        if isinstance(effect, Send):
            if not codec.valid_host(effect.to[0]):
                raise AssertionError(f"node sends to an invalid host {effect.to!r}")
            codec.decode_packet(codec.encode_packet(effect.packet))
    return True


@dataclass
class FuzzRun:
    """What one in-process run saw: counts, the crashes (input index, bytes, traceback), and the largest
    state the fuzzed Node held (sampled every `SAMPLE_EVERY` inputs): members, queued rumors, relays for
    indirect probes, suspicions."""

    inputs: int = 0
    skipped: int = 0
    decoded: int = 0
    crashes: list[tuple[int, bytes, str]] = field(default_factory=list)
    peak: Counter[str] = field(default_factory=Counter)


SAMPLE_EVERY = 1000
FRESH_NODE_EVERY = 50_000


def fuzz_target(seed: int, now: float) -> Node:
    return Node(AgentConfig.preset_config("lan", name="fuzz-target"), ("127.0.0.1", 7946), random.Random(seed), now)


def node_state(node: Node) -> dict[str, int]:
    """The sizes of the Node's per-peer state (what a flood could grow)."""
    return {"members": len(node.table), "queue": len(node.queue), "relays": len(node._relays),
            "suspicions": len(node._suspicions)}


def fuzz_in_process(inputs: int, seed: int, on_input: Callable[[int, bytes], None] | None = None,
                    *, fresh_node_every: int = FRESH_NODE_EVERY) -> FuzzRun:
    """`inputs` generated packets (seeded) through the codec and a Node (`check_one`); `on_input(i, data)`
    also gets each one (the --agent sender). A fresh Node every `fresh_node_every` inputs: a full member table
    makes every tick slower."""
    r = random.Random(seed)
    run = FuzzRun()
    node = fuzz_target(7, 0.0)
    now = 1.0
    for i in range(inputs):
        run.inputs += 1
        data = gen_packet(r)
        if data is None:
            run.skipped += 1
            continue
        now += 0.001
        if i % fresh_node_every == 0:
            node = fuzz_target(i, now)
        try:
            run.decoded += check_one(node, data, now)
        except Exception:
            run.crashes.append((i, data, traceback.format_exc()))
        if on_input is not None:
            on_input(i, data)
        if i % SAMPLE_EVERY == 0:
            for name, size in node_state(node).items():
                run.peak[name] = max(run.peak[name], size)
    for name, size in node_state(node).items():
        run.peak[name] = max(run.peak[name], size)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--agent", action="store_true", help="also send every input to a real agent over UDP")
    ap.add_argument("--pause", type=float, default=0.005, help="with --agent: seconds of sleep every 10 inputs "
                    "(0.005: at most ~2,000 packets/s)")
    args = ap.parse_args()
    started = time.monotonic()
    cluster = agents = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    samples: list[tuple[float, float]] = []
    if args.agent:
        from gossip_agent.cli.cluster import LocalCluster
        from tests.hostile.peer_support import metric, rss_mb, start_cluster
        tmp = Path(tempfile.mkdtemp(prefix="fuzz-udp-"))
        cluster = LocalCluster(tmp)
        agents = start_cluster(cluster, tmp, 2)

    def each(i: int, data: bytes) -> None:
        if agents is not None:
            sock.sendto(data, ("127.0.0.1", agents[0].port))
            if i % 10 == 0:
                time.sleep(args.pause)  # the rate: a full-speed flood measures CPU capacity, not robustness
            if i % 20_000 == 0:
                try:
                    lag = metric(agents[0], "gossip_event_loop_lag_max_seconds")
                except Exception:
                    lag = float("inf")  # did not answer within the client's timeout
                samples.append((rss_mb(agents[0].pid), lag))
        if i and i % 500_000 == 0:
            print(f"{i:,} inputs, {i / (time.monotonic() - started):,.0f}/s", flush=True)

    try:
        run = fuzz_in_process(args.inputs, args.seed, each)
        for i, data, trace in run.crashes:
            print(f"CRASH on input {i}: {data!r}\n{trace}", file=sys.stderr)
        crashes = len(run.crashes)
        elapsed = time.monotonic() - started
        print(f"done: {args.inputs:,} inputs ({run.skipped:,} not msgpack-representable, {run.decoded:,} decoded) "
              f"in {elapsed:,.0f}s, {crashes} crashes; largest Node state "
              + ", ".join(f"{name} {size:,}" for name, size in sorted(run.peak.items())))
        if agents is not None:
            from tests.hostile.peer_support import http
            states = {m["name"]: m["state"] for m in agents[0].client.members()}
            ok = states.get(agents[1].name) == "alive" and http(agents[0].addr, "GET", "/readyz")[0] == 200
            print(f"agent: ready and sees its peer alive: {ok} ({len(states)} members incl. fuzzed ones); "
                  f"RSS MB max {max(s[0] for s in samples):.1f} "
                  f"(first {samples[0][0]:.1f}); loop lag max seen {max(s[1] for s in samples):.3f}s")
            crashes += 0 if ok else 1
        return 1 if crashes else 0
    finally:
        sock.close()
        if cluster is not None:
            cluster.stop_all()


if __name__ == "__main__":
    sys.exit(main())
