"""A test double of a user's OpenAI-compatible model server, for mesh tests and the bench:
`python openai_double.py PORT MODEL NAME [DELAY_S]`.

It serves one model, one request at a time, as a GPU server does: each chat completion
holds the model for DELAY_S (default 0.05) and answers which server (NAME) served it. Its
/health reports `inflight` and `capacity` as the built-in backends do, so the router
announces its load. A real model would make the load tests slow and noisy on 2 cores.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Double(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model, name, delay_s = "double", "double", 0.05
    model_lock = threading.Lock()  # one generation at a time
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
            self.answer({"status": "ok", "model": self.model, "inflight": Double.inflight, "capacity": 1})
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
            with Double.model_lock:
                time.sleep(self.delay_s)
        finally:
            with Double.count_lock:
                Double.inflight -= 1
        self.answer({"id": "chatcmpl-double", "object": "chat.completion", "created": int(time.time()),
                     "model": self.model, "served_by": self.name, "choices": [{
                         "index": 0, "message": {"role": "assistant", "content": self.name},
                         "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                              "total_tokens": 2}})


if __name__ == "__main__":
    Double.model, Double.name = sys.argv[2], sys.argv[3]
    Double.delay_s = float(sys.argv[4]) if len(sys.argv) > 4 else Double.delay_s
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Double).serve_forever()
