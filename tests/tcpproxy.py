"""A TCP proxy that can hold traffic or drop a connection: what a process sees when its Redis stalls,
or when its link dies after Redis executed a command and before the reply came back.

While paused, bytes stay unread in the kernel's buffers and are forwarded on resume, so a command
whose client gave up (socket timeout) still reaches Redis late, as over a congested link.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.trigger: Callable[[bytes], bool] | None = None
        self.cut_trigger: Callable[[bytes], bool] | None = None
        self.cuts_left = 0
        self.cuts = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TcpProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def pause_at(self, trigger: Callable[[bytes], bool]) -> None:
        """Pause when a client sends bytes for which `trigger` is true; those bytes are held too."""
        self.trigger = trigger

    def cut_after(self, trigger: Callable[[bytes], bool], times: int = 1) -> None:
        """The next `times` client sends for which `trigger` is true reach Redis, and then their
        connection drops before Redis's reply gets back: the command ran, the client never hears."""
        self.cuts_left, self.cut_trigger = times, trigger

    def _should_cut(self, data: bytes) -> bool:
        trigger = self.cut_trigger
        if trigger is None or self.cuts_left <= 0 or not trigger(data):
            return False
        self.cuts_left -= 1
        self.cuts += 1
        return True

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            cut = threading.Event()
            for source, sink, outgoing in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, outgoing, cut), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outgoing: bool, cut: threading.Event) -> None:
        try:
            while True:
                self.flowing.wait()
                data = source.recv(65536)
                if not data or cut.is_set():
                    break  # a cut link forwards no reply
                trigger = self.trigger
                if outgoing and trigger is not None and trigger(data):
                    self.trigger = None
                    self.flowing.clear()
                self.flowing.wait()  # a pause that began during recv holds these bytes too
                if outgoing and self._should_cut(data):
                    cut.set()
                    sink.sendall(data)
                    time.sleep(0.2)  # Redis runs the command; its reply is never forwarded
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
