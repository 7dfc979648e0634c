"""The replicated state end to end: real agent processes on 127.0.0.1 with the state extension.

Every agent runs the state layer (`extension.default_extensions`). Waits are bounded generously by the
config (these check correctness, not speed).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from gossip_agent.cli.client import ClientError, parse_metrics
from gossip_agent.cli.cluster import AgentProcess, LocalCluster, free_port_block
from tests.hostile.peer_support import patient

T = TypeVar("T")

SPEC: dict[str, Any] = {
    "preset": "local",
    "membership": {"probeInterval": "500ms", "probeTimeout": "200ms", "suspicionMult": 3,
                   "suspicionMaxTimeoutMult": 2, "reapAfter": "120s", "streamTimeout": "1s"},
    "gossip": {"interval": "100ms", "pushPullInterval": "5s"},
    "antiEntropy": {"interval": "2s"},
    "state": {"conflictPolicy": "lww", "conflictPolicies": {"carts/": "siblings"}, "maxValueBytes": 65536},
    "storage": {"fsync": "interval"},
}

# SIGTERM's leave, then the state layer's flush: seconds on a busy machine, where the default grace (5 s) would end
# it with SIGKILL (exit -9, no graceful stop). Only a failure waits this long.
STOP_GRACE = 60.0


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ClientError, OSError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


def http(agent: AgentProcess | str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    addr = agent if isinstance(agent, str) else agent.addr
    req = urllib.request.Request(f"http://{addr}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def put(agent: AgentProcess, key: str, value: bytes, query: str = "", **headers: str) -> dict[str, Any]:
    status, _, body = http(agent, "PUT", f"/v1/kv/{quote(key)}{query}", value, headers)
    assert status == 200, (status, body)
    return dict(json.loads(body))


def get(agent: AgentProcess, key: str) -> bytes | None:
    status, _, body = http(agent, "GET", f"/v1/kv/{quote(key)}")
    return body if status == 200 else None


def get_json(agent: AgentProcess, key: str) -> dict[str, Any] | None:
    status, _, body = http(agent, "GET", f"/v1/kv/{quote(key)}?format=json")
    return dict(json.loads(body)) if status == 200 else None


def metrics(agent: AgentProcess) -> dict[str, float]:
    return parse_metrics(patient(agent).metrics())  # (read once too: agent.client's 1 s is a busy machine's miss)


def root(agent: AgentProcess) -> str | None:
    status = agent.status()
    return None if status is None or "state" not in status else str(status["state"]["root"])


def same_roots(agents: list[AgentProcess]) -> bool:
    roots = {root(a) for a in agents}
    return len(roots) == 1 and None not in roots


def config(name: str, port: int, seeds: list[str], data: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {**SPEC, "name": name, "bindAddress": "127.0.0.1", "advertiseAddress": "127.0.0.1",
                           "port": port, "seeds": seeds,
                           "storage": {**SPEC["storage"], "dataDir": str(data / name)}}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def joined(agents: list[AgentProcess]) -> bool:
    for a in agents:
        status = a.status()
        if status is None or status["members"]["alive"] != len(agents) or "state" not in status:
            return False
    return True


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    root_dir = tmp_path_factory.mktemp("state")
    base = free_port_block(3)
    seeds = [f"127.0.0.1:{base}"]
    with LocalCluster(root_dir) as c:
        agents = [c.start(config(f"s{i}", base + i, seeds, root_dir / "data")) for i in range(3)]
        wait_for(lambda: joined(agents), 30.0, "3 state agents to join")
        yield agents


def test_write_at_one_read_at_all(trio: list[AgentProcess]) -> None:
    a, *_ = trio
    answer = put(a, "greeting", b"hello \xff bytes")
    assert answer["acknowledged"] == 1 and answer["siblings"] == 1
    for agent in trio:
        wait_for(lambda agent=agent: get(agent, "greeting") == b"hello \xff bytes", 60.0,
                 f"{agent.name} to read the write")
    # JSON in, JSON out, and the causal context comes back in a header.
    status, headers, body = http(trio[1], "PUT", "/v1/kv/dir/with%20space", json.dumps({"value": "tëxt"}).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 200 and headers["X-Gossip-Context"]
    doc = wait_for(lambda: get_json(trio[2], "dir/with space"), 60.0, "the JSON write at s2")
    assert doc["values"][0]["value"] == "tëxt" and doc["context"]
    status, _, body = http(trio[2], "GET", "/v1/kv?prefix=dir/&limit=10")
    assert status == 200 and [e["key"] for e in json.loads(body)["entries"]] == ["dir/with space"]
    wait_for(lambda: same_roots(trio), 60.0, "equal Merkle roots")
    status_doc = wait_for(lambda: (s := trio[0].status()) and s["convergence"]["converged"] and s, 60.0,
                          "convergence to be reported")
    assert status_doc["convergence"]["fraction"] == 1.0 and status_doc["convergence"]["distinctRoots"] == 1
    assert status_doc["state"]["keys"] >= 2


def test_concurrent_writes_siblings_and_lww(trio: list[AgentProcess]) -> None:
    a, b, c = trio
    # Both writers overwrite the same version they read (the same stale context): concurrent, whatever the
    # timing of the rumors.
    for key in ("carts/7", "plain/7"):
        put(a, key, b"v0")
        wait_for(lambda key=key: all(get(x, key) == b"v0" for x in trio), 60.0, f"{key}=v0 everywhere")
        _, headers, _ = http(c, "GET", f"/v1/kv/{key}")
        context = headers["X-Gossip-Context"]
        results: list[Any] = []

        def write(agent: AgentProcess, value: bytes, key: str = key, context: str = context,
                  results: list[Any] = results) -> None:
            results.append(put(agent, key, value, **{"X-Gossip-Context": context}))

        threads = [threading.Thread(target=write, args=(a, b"from-a")),
                   threading.Thread(target=write, args=(b, b"from-b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 2
    siblings = wait_for(lambda: all((d := get_json(x, "carts/7")) and len(d["values"]) == 2 for x in trio)
                        and get_json(c, "carts/7"), 60.0, "both siblings everywhere")
    assert sorted(v["value"] for v in siblings["values"]) == ["from-a", "from-b"]
    _, headers, _ = http(c, "GET", "/v1/kv/carts/7")
    assert headers["X-Gossip-Siblings"] == "2"
    # Writing back with the context read collapses them.
    put(c, "carts/7", b"merged", **{"X-Gossip-Context": siblings["context"]})
    wait_for(lambda: all(get(x, "carts/7") == b"merged" for x in trio), 60.0, "the resolved value everywhere")
    # LWW: one winner, the same everywhere.
    winners = wait_for(lambda: (vals := {get(x, "plain/7") for x in trio}) and len(vals) == 1
                       and vals != {b"v0"} and vals, 60.0, "one LWW winner everywhere")
    assert winners <= {b"from-a", b"from-b"}
    assert sum(metrics(x).get("gossip_state_conflicts_detected_total", 0) for x in trio) >= 1


def test_invalid_input_is_4xx_naming_the_problem(trio: list[AgentProcess]) -> None:
    a = trio[0]
    cases: list[tuple[str, str, bytes | None, dict[str, str], int, str]] = [
        ("PUT", "/v1/kv/" + "k" * 300, b"x", {}, 400, "key must be 1..256 bytes"),
        ("PUT", "/v1/kv/big", b"x" * 70000, {}, 413, "limit is 65536"),
        ("PUT", "/v1/kv/j", b"{not json", {"Content-Type": "application/json"}, 400, "invalid JSON"),
        ("PUT", "/v1/kv/j", b'{"value": 3}', {"Content-Type": "application/json"}, 400, "value must be a string"),
        ("PUT", "/v1/kv/w?w=zero", b"x", {}, 400, "w must be an integer"),
        ("PUT", "/v1/kv/w?w=0", b"x", {}, 400, "w must be 1.."),
        ("PUT", "/v1/kv/ctx", b"x", {"X-Gossip-Context": "!!!"}, 400, "invalid context"),
        ("GET", "/v1/kv?limit=0", None, {}, 400, "limit must be"),
        ("GET", "/v1/kv/never-written", None, {}, 404, "no such key"),
        ("POST", "/v1/crdt/counters/c1", b'{"delta": "x"}', {"Content-Type": "application/json"}, 400, "delta"),
        ("POST", "/v1/crdt/sets/s1", b'{"add": [1]}', {"Content-Type": "application/json"}, 400,
         "list of strings"),
    ]
    for method, path, body, headers, code, needle in cases:
        status, _, answer = http(a, method, path, body, headers)
        assert status == code, (path, status, answer)
        assert needle in json.loads(answer)["error"], (path, answer)
    # A CRDT key is not a plain value, and the other way round.
    http(a, "POST", "/v1/crdt/counters/kind", b'{"delta": 1}', {"Content-Type": "application/json"})
    status, _, answer = http(a, "PUT", "/v1/kv/crdt/counters/kind", b"x")
    assert status == 409 and "pncounter" in json.loads(answer)["error"]
    # Garbage on the peer endpoints is refused and counted, and the agent carries on.
    for path in ("/v1/internal/antientropy", "/v1/internal/replicate", "/v1/internal/fetch"):
        status, _, _ = http(a, "POST", path, b"\x01\x93garbage")
        assert status == 400
    assert get(a, "greeting") is not None


def test_watch_stream_receives_remote_change(trio: list[AgentProcess]) -> None:
    a, b, _ = trio
    req = urllib.request.Request(f"http://{b.addr}/v1/watch?prefix=watched/")
    with urllib.request.urlopen(req, timeout=60.0) as stream:
        first = json.loads(stream.readline())
        assert first == {"event": "watching", "prefix": "watched/"}
        put(a, "unwatched", b"no")
        put(a, "watched/x", b"yes")
        event = json.loads(stream.readline())
    assert event["key"] == "watched/x" and event["event"] == "put" and event["values"] == [{"value": "yes"}]
    assert event["origin"] == "remote"


def test_crdt_counter_increments_converge_to_the_sum(trio: list[AgentProcess]) -> None:
    threads = []
    for i, agent in enumerate(trio):
        def bump(agent: AgentProcess = agent, delta: int = i + 1) -> None:
            for _ in range(5):
                status, _, _ = http(agent, "POST", "/v1/crdt/counters/hits", json.dumps({"delta": delta}).encode(),
                                    {"Content-Type": "application/json"})
                assert status == 200
        threads.append(threading.Thread(target=bump))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = 5 * (1 + 2 + 3)
    for agent in trio:
        wait_for(lambda agent=agent: json.loads(http(agent, "GET", "/v1/crdt/counters/hits")[2])["value"] == expected,
                 15.0, f"{agent.name}'s counter to reach {expected}")
    http(trio[0], "POST", "/v1/crdt/sets/tags", json.dumps({"add": ["x", "y"]}).encode(),
         {"Content-Type": "application/json"})
    # An OR-set removes the adds it has observed: s1 removes x once s0's add has reached it (sent at once, the
    # remove could overtake the add, which would then survive everywhere, as the OR-set means it to).
    wait_for(lambda: "x" in json.loads(http(trio[1], "GET", "/v1/crdt/sets/tags")[2]).get("elements", []), 60.0,
             "s0's add at s1")
    http(trio[1], "POST", "/v1/crdt/sets/tags", json.dumps({"add": ["z"], "remove": ["x"]}).encode(),
         {"Content-Type": "application/json"})
    wait_for(lambda: all(json.loads(http(x, "GET", "/v1/crdt/sets/tags")[2])["elements"] in (["y", "z"],)
                         for x in trio), 60.0, "the OR-set to converge")


def test_large_values_are_announced_and_pulled(trio: list[AgentProcess]) -> None:
    a = trio[0]
    value = os.urandom(20000)
    put(a, "blobs/one", value)
    for agent in trio:
        wait_for(lambda agent=agent: get(agent, "blobs/one") == value, 60.0, f"{agent.name} to pull the blob")
    assert metrics(a).get('gossip_state_rumors_total{result="announced"}', 0) >= 1
    assert sum(metrics(x).get('gossip_state_rumors_total{result="pulled"}', 0) for x in trio[1:]) >= 1


def test_delete_does_not_resurrect(tmp_path: Path) -> None:
    """A replica that was down during a delete comes back holding the old value: anti-entropy must spread
    the tombstone, not the value."""
    base = free_port_block(3)
    seeds = [f"127.0.0.1:{base}"]
    with LocalCluster(tmp_path) as c:
        cfgs = [config(f"d{i}", base + i, seeds, tmp_path / "data") for i in range(3)]
        agents = [c.start(cfg) for cfg in cfgs]
        wait_for(lambda: joined(agents), 30.0, "3 agents to join")
        put(agents[0], "doomed", b"alive")
        wait_for(lambda: all(get(x, "doomed") == b"alive" for x in agents), 60.0, "the value everywhere")
        assert c.stop(agents[2], grace=STOP_GRACE) == 0
        status, _, _ = http(agents[0], "DELETE", "/v1/kv/doomed")
        assert status == 200
        wait_for(lambda: get(agents[1], "doomed") is None, 60.0, "the delete at d1")
        back = c.start(cfgs[2])
        live = [agents[0], agents[1], back]
        wait_for(lambda: joined(live), 30.0, "d2 to rejoin")
        wait_for(lambda: same_roots(live), 60.0, "roots to agree after d2 is back")
        for x in live:
            status, headers, body = http(x, "GET", "/v1/kv/doomed")
            assert status == 404 and json.loads(body)["deleted"] is True, (x.name, status, body)
        # Once every member publishes the same root, the tombstone is acknowledged and collected everywhere
        # (its context stays in the graveyard, so a stale copy still cannot resurrect it).
        wait_for(lambda: all((m := metrics(x))["gossip_state_tombstones"] == 0 and m["gossip_state_graveyard"] >= 1
                             for x in live), 60.0, "the tombstone to be collected everywhere")
        assert all(get(x, "doomed") is None for x in live)
        # A write after the delete (with the context read) re-creates the key everywhere.
        put(back, "doomed", b"reborn", **{"X-Gossip-Context": headers["X-Gossip-Context"]})
        wait_for(lambda: all(get(x, "doomed") == b"reborn" for x in live), 60.0, "the re-created key")


def test_kill9_after_acknowledged_w2_writes_loses_nothing(tmp_path: Path) -> None:
    base = free_port_block(3)
    seeds = [f"127.0.0.1:{base + i}" for i in range(3)]
    with LocalCluster(tmp_path) as c:
        cfgs = [config(f"k{i}", base + i, seeds, tmp_path / "data") for i in range(3)]
        agents = [c.start(cfg) for cfg in cfgs]
        wait_for(lambda: joined(agents), 30.0, "3 agents to join")
        acked = {}
        for i in range(30):
            key, value = f"durable/{i}", f"value-{i}".encode()
            answer = put(agents[0], key, value, "?w=2&timeout=30")
            assert answer["acknowledged"] >= 2
            acked[key] = value
        for a in agents:  # no graceful anything: every process dies at once
            a.signal(signal.SIGKILL)
        for a in agents:
            a.wait(5.0)
        # The writer alone (its peers are down): everything it acknowledged is there, from its own log.
        writer = c.start(cfgs[0])
        wait_for(lambda: writer.status(), 60.0, "k0 to restart")
        for key, value in acked.items():
            assert get(writer, key) == value, key
        # Each acknowledged write was also logged by a peer before it acknowledged: with k0 down again,
        # the two others together still hold every key.
        writer.signal(signal.SIGKILL)
        writer.wait(5.0)
        others = [c.start(cfgs[1]), c.start(cfgs[2])]
        wait_for(lambda: all(o.status() for o in others), 60.0, "k1 and k2 to restart")
        for key, value in acked.items():
            assert value in (get(others[0], key), get(others[1], key)), key


def test_write_concern_times_out_with_a_clear_message(trio: list[AgentProcess]) -> None:
    # w=5 of 3 members always times out; the peers' two acks must come within the timeout to be counted, which
    # 0.5 s does not promise on a busy machine: longer timeouts until they do (bounded; quiet machine: the first).
    for timeout in (0.5, 2.0, 8.0, 30.0):
        status, _, body = http(trio[0], "PUT", f"/v1/kv/wc?w=5&timeout={timeout:g}", b"x")
        answer = json.loads(body)
        assert status == 504 and 1 <= answer["acknowledged"] <= 3, (status, answer)
        assert f"{answer['acknowledged']} of 5" in answer["error"], answer
        if answer["acknowledged"] == 3:
            break
    assert answer["acknowledged"] == 3
    assert "may still converge" in answer["error"] and "3 of 5" in answer["error"]
    assert put(trio[0], "wc", b"y", "?w=3&timeout=30")["acknowledged"] == 3


def test_anti_entropy_repairs_a_replica_that_missed_rumors(tmp_path: Path) -> None:
    """r2 is down while 10 keys change; back with its old data, it is repaired by anti-entropy with bytes
    that depend on the 10 differences, not on the 1,000 keys held."""
    base = free_port_block(3)
    seeds = [f"127.0.0.1:{base}"]
    slow_ae = {"antiEntropy": {"interval": "60s"}}
    with LocalCluster(tmp_path) as c:
        cfgs = [config(f"r{i}", base + i, seeds, tmp_path / "data", **slow_ae) for i in range(3)]
        agents = [c.start(cfg) for cfg in cfgs]
        wait_for(lambda: joined(agents), 30.0, "3 agents to join")
        n, value_bytes = 1000, 200
        for i in range(n):
            status, _, _ = http(agents[i % 2], "PUT", f"/v1/kv/bulk/{i:05d}", os.urandom(value_bytes))
            assert status == 200
        wait_for(lambda: same_roots(agents), 30.0, f"all 3 to hold the {n} keys")
        assert c.stop(agents[2], grace=STOP_GRACE) == 0
        for i in range(10):
            put(agents[0], f"bulk/{i * 97:05d}", b"changed")
        wait_for(lambda: same_roots(agents[:2]), 60.0, "r0 and r1 to agree")
        before = [metrics(a) for a in agents[:2]]
        back = c.start(cfgs[2])
        live = [agents[0], agents[1], back]
        wait_for(lambda: same_roots(live), 30.0, "r2 to be repaired")
        after = [metrics(a) for a in live]
        keys = "gossip_antientropy_bytes_total"
        ae_bytes = sum(m.get(f'{keys}{{direction="sent"}}', 0) + m.get(f'{keys}{{direction="received"}}', 0)
                       for m in after) - sum(m.get(f'{keys}{{direction="sent"}}', 0)
                                             + m.get(f'{keys}{{direction="received"}}', 0) for m in before)
        repaired = (after[2].get('gossip_antientropy_keys_repaired_total{side="pulled"}', 0)
                    + after[2].get('gossip_antientropy_keys_repaired_total{side="pushed_in"}', 0))
        state_bytes = n * value_bytes
        print(f"anti-entropy repaired {repaired:.0f} keys with {ae_bytes:.0f} bytes (state ~{state_bytes} bytes)")
        assert repaired >= 10
        assert ae_bytes < state_bytes / 10, f"{ae_bytes} bytes for 10 differences in {state_bytes} bytes of state"
        assert all(get(back, f"bulk/{i * 97:05d}") == b"changed" for i in range(10))


def test_context_token_is_base64_of_a_context(trio: list[AgentProcess]) -> None:
    put(trio[0], "context-token", b"x")  # its own key: the test passes alone, not only after the others
    _, headers, _ = http(trio[0], "GET", "/v1/kv/context-token")
    assert base64.b64decode(headers["X-Gossip-Context"])[:2] == b"\x93\x05"
