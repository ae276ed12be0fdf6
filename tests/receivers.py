"""Local receivers for notifier tests: an HTTP server that records JSON bodies, and an SMTP mailbox."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records every JSON POST it accepts.

    While `down` it answers 503, as a broken receiver would; `status_for(body)` may answer any other
    status for one body (a 400 records nothing); `delay` makes every answer that slow.
    """

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.down = False
        self.delay = 0.0
        self.status_for: Callable[[dict[str, Any]], int] = lambda body: 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                time.sleep(receiver.delay)
                status = 503 if receiver.down else receiver.status_for(body)
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.bodies.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def statuses(self) -> list[str]:
        return [body["status"] for body in self.bodies]

    def transitions(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[str]]:
        """Alertmanager-shaped bodies grouped by (alertname, labels): the statuses each alert went through."""
        found: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
        for body in self.bodies:
            for alert in body["alerts"]:
                labels = tuple(sorted(alert["labels"].items()))
                found.setdefault((alert["labels"]["alertname"], labels), []).append(alert["status"])
        return found


class Mailbox:
    """A local SMTP server (aiosmtpd) that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Message
        from rqscope.monitor.embedded import free_port

        self.messages: list[Any] = []
        mailbox = self

        class Collect(Message):
            def handle_message(self, message: Any) -> None:
                mailbox.messages.append(message)

        self.port = free_port()
        self.controller = Controller(Collect(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Mailbox:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
