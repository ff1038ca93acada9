"""A test double of a user's OpenAI-compatible model server, for mesh tests and the bench:
`python openai_double.py PORT MODEL NAME [DELAY_S [CAPACITY]]`.

It serves one model, CAPACITY requests at a time (default 1, as a GPU server does), on
127.0.0.1:PORT: each chat completion holds one of its slots for DELAY_S (default 0.05) and
answers which server (NAME) served it; requests beyond its capacity wait for a slot. Its
/health reports `inflight` (those served and those waiting) and `capacity` as the built-in
backends do, so the router announces its load. A real model would make the load tests slow
and noisy on 2 cores. A script with no imports from this repository: a node's supervisord
runs it (tests/mesh, bench/scenarios/openai.py).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Double(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write for headers and body would do too; without this, a reply whose body goes out
    # after its headers waits for the client's delayed ACK (Nagle): 40 ms on some requests.
    disable_nagle_algorithm = True
    model, name, delay_s, capacity = "double", "double", 0.05, 1
    slots = threading.Semaphore(1)  # generations at a time: `capacity`
    count_lock = threading.Lock()
    inflight = 0

    def log_message(self, *args):
        pass

    def answer(self, payload, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self.answer({"status": "ok", "model": self.model, "inflight": Double.inflight,
                         "capacity": self.capacity})
        elif self.path == "/v1/models":
            self.answer({"object": "list", "data": [{"id": self.model, "object": "model", "kind": "chat"}]})
        else:
            self.answer({"error": {"message": "not found", "type": "invalid_request_error"}}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if body.get("model") != self.model:
            self.answer({"error": {"message": f"unknown model {body.get('model')!r}", "type": "invalid_request_error",
                                   "param": "model", "code": "model_not_found"}}, 404)
            return
        with Double.count_lock:
            Double.inflight += 1
        try:
            with Double.slots:
                time.sleep(self.delay_s)
        finally:
            with Double.count_lock:
                Double.inflight -= 1
        # Token counts a client can tell apart: one prompt token per word, max_tokens completion tokens.
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt, "completion_tokens": body.get("max_tokens") or 1,
                 "total_tokens": prompt + (body.get("max_tokens") or 1)}
        if body.get("stream"):
            self.stream(usage if body.get("stream_options", {}).get("include_usage") else None)
            return
        self.answer({"id": "chatcmpl-double", "object": "chat.completion", "created": int(time.time()),
                     "model": self.model, "served_by": self.name, "choices": [{
                         "index": 0, "message": {"role": "assistant", "content": self.name},
                         "finish_reason": "stop"}], "usage": usage})

    def stream(self, usage: dict | None) -> None:
        """Server-sent events as OpenAI sends them: the answer, then `usage` alone when asked
        for (stream_options.include_usage), then [DONE]; each event flushed on its own."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = {"id": "chatcmpl-double", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": self.model}
        events = [chunk | {"choices": [{"index": 0, "delta": {"content": self.name}, "finish_reason": "stop"}]}]
        events += [chunk | {"choices": [], "usage": usage}] if usage else []
        for data in [*(json.dumps(e) for e in events), "[DONE]"]:
            event = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


if __name__ == "__main__":
    Double.model, Double.name = sys.argv[2], sys.argv[3]
    Double.delay_s = float(sys.argv[4]) if len(sys.argv) > 4 else Double.delay_s
    Double.capacity = int(sys.argv[5]) if len(sys.argv) > 5 else Double.capacity
    Double.slots = threading.Semaphore(Double.capacity)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Double).serve_forever()
