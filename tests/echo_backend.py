"""A small HTTP service for mesh tests, run by meshworker as `svc-<name>` on a fixed port
inside a test host's namespace: `python echo_backend.py PORT NAME`.

GET any path → {"name", "path", "client", "forwarded_for"}; POST → {"name", "echo": body}.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "echo"

    def log_message(self, *args):
        pass

    def answer(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer({"name": self.name, "path": self.path, "client": self.client_address[0],
                     "forwarded_for": self.headers.get("X-Forwarded-For")})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer({"name": self.name, "echo": json.loads(body or b"null")})


if __name__ == "__main__":
    Echo.name = sys.argv[2]
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
