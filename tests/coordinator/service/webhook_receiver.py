"""A webhook receiver for the service's end-to-end tests: every POST body, parsed as JSON, answered 200."""

from __future__ import annotations

import http.server
import json


class JsonReceiver(http.server.BaseHTTPRequestHandler):
    """Subclass it with a `bodies` list of its own (`type("Receiver", (JsonReceiver,), {"bodies": []})`)."""

    bodies: list[dict]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None
