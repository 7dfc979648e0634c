"""gossipctl reports an answer it cannot read as a message, not a traceback (session 14 review, F6).

A read token over 64 KiB (a state whose context named 12,000 made-up writers) came back in a response header
that Python's http.client refuses (`LineTooLong`, an `http.client.HTTPException`, which is no OSError): cli/client.py
caught only OSError, so `gossipctl get` exited with a raw traceback. Tokens are small now (kvstore.read_context);
any answer the client cannot read, from any server, is a `ClientError` with a one-line message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.cli.main import main


class _Broken(BaseHTTPRequestHandler):
    """/long: a 70 KB header line; /short: a body shorter than its Content-Length; /lines: a stream that stops
    mid-chunk."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.startswith("/v1/kv/"):
            self.send_header("X-Gossip-Context", "A" * 70_000)
            self.send_header("Content-Length", "1")
            self.end_headers()
            self.wfile.write(b"v")
        elif self.path == "/short":
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only this")
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"4\r\none\n\r\nff\r\ntw")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_gossipctl_get_of_an_unreadable_answer_is_a_message(broken: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "carts/k", "--addr", broken]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gossipctl: the agent at") and "LineTooLong" in err and "Traceback" not in err
    assert err.count("\n") == 1 and len(err) < 400


def test_a_short_body_and_a_broken_stream_are_client_errors(broken: str) -> None:
    client = AgentClient(broken)
    with pytest.raises(ClientError, match="IncompleteRead"):
        client.call("GET", "/short")
    with client.stream("/lines") as stream, pytest.raises(ClientError, match="stream from the agent broke"):
        list(stream)
