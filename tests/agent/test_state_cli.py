"""gossipctl's state commands (cli/kv.py) against one real agent process with the state extension."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip_agent.cli import kv
from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.cli.cluster import AgentProcess, LocalCluster, free_port_block
from tests.agent.test_state_processes import config, wait_for


def gossipctl(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gossipctl")
    kv.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.run(args)
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("cli")
    port = free_port_block(1)
    with LocalCluster(root) as c:
        a = c.start(config("c0", port, [], root / "data"))
        wait_for(lambda: (s := a.status()) and "state" in s, 20.0, "the agent to serve")
        yield a


def test_put_get_ls_del(agent: AgentProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    addr = ["--addr", agent.addr]
    assert gossipctl(["put", *addr, "cfg/a", "one"], capsys) == (0, "ok (1 holder(s))\n")
    blob = tmp_path / "blob"
    blob.write_bytes(b"\xff\x01two")
    assert gossipctl(["put", *addr, "cfg/b", "--file", str(blob)], capsys)[0] == 0
    assert gossipctl(["get", *addr, "cfg/a"], capsys) == (0, "one")
    code, out = gossipctl(["get", *addr, "--json", "cfg/b"], capsys)
    assert code == 0 and json.loads(out)["values"][0]["valueBase64"]
    assert gossipctl(["ls", *addr, "cfg/"], capsys) == (0, "cfg/a\ncfg/b\n")
    assert gossipctl(["del", *addr, "cfg/a"], capsys) == (0, "deleted\n")
    with pytest.raises(ClientError, match="deleted"):
        gossipctl(["get", *addr, "cfg/a"], capsys)
    with pytest.raises(ClientError, match="key must be"):
        gossipctl(["put", *addr, "k" * 300, "x"], capsys)


def test_counter_and_set(agent: AgentProcess, capsys: pytest.CaptureFixture[str]) -> None:
    addr = ["--addr", agent.addr]
    assert gossipctl(["counter", "incr", *addr, "visits", "5"], capsys) == (0, "5\n")
    assert gossipctl(["counter", "incr", *addr, "visits", "-2"], capsys) == (0, "3\n")
    assert gossipctl(["counter", "get", *addr, "visits"], capsys) == (0, "3\n")
    assert gossipctl(["set", "add", *addr, "team", "ann", "bob"], capsys) == (0, "ann\nbob\n")
    assert gossipctl(["set", "rm", *addr, "team", "ann"], capsys) == (0, "bob\n")
    assert gossipctl(["set", "get", *addr, "team"], capsys) == (0, "bob\n")


def test_watch_prints_changes(agent: AgentProcess, capsys: pytest.CaptureFixture[str]) -> None:
    addr = ["--addr", agent.addr]
    parser = argparse.ArgumentParser()
    kv.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["watch", *addr, "w/", "--count", "1"])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(args.run(args)))
    thread.start()
    # Writes until the watcher has seen one (it may subscribe after the first).
    wait_for(lambda: (gossipctl(["put", *addr, "w/x", "hi"], capsys) and None) or not thread.is_alive(), 10.0,
             "the watch to print a change", interval=0.2)
    thread.join(5.0)
    assert result == [0]


def test_agent_client_sends_headers_and_returns_the_answers() -> None:
    """What cli/kv.py needs from AgentClient: request headers out, answer headers back, error statuses as
    answers, a stream."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            context = self.headers.get("X-Gossip-Context", "")
            self.send_response(409 if body == b"conflict" else 200)
            self.send_header("X-Gossip-Context", context)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"one\ntwo\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AgentClient(f"127.0.0.1:{server.server_address[1]}")
        assert client.request("PUT", "/k", b"v", headers={"X-Gossip-Context": "ctx"}) == (200, b"v")
        reply = client.call("PUT", "/k", b"conflict", headers={"X-Gossip-Context": "c2"})
        assert (reply.status, reply.headers["X-Gossip-Context"], reply.body) == (409, "c2", b"conflict")
        with client.stream("/watch") as stream:
            assert stream.status == 200 and list(stream) == [b"one\n", b"two\n"]
    finally:
        server.shutdown()
        server.server_close()
