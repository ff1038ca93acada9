"""The bench's HTTP client counts a 200 whose body a proxy cut short as failed, at its own
time: before, it returned the short body as an answer and the next request on the closed
connection failed instead (bench failover saw a kill's failure 2 s late, on another request)."""

from __future__ import annotations

import socket
import threading

import pytest

from bench.httpclient import HttpError, KeepAliveClient

pytestmark = pytest.mark.timeout(10)


def test_a_body_cut_short_is_an_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer_and_close() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")

        thread = threading.Thread(target=answer_and_close)
        thread.start()
        with (KeepAliveClient(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=5) as client,
              pytest.raises(HttpError, match="3 bytes into a 10-byte body")):
            client.request("GET", "/hello")
        thread.join(5)
