"""A unix socket that tests' scripted services listen on: each connection served on a thread of its own."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Callable


class UnixListener:
    """Accepts connections at `path` on a thread of its own, from start() to stop(), and serves each on a
    thread of its own with `serve(connection, number)` (numbered from 1; `connections` counts them); the
    connection is closed when `serve` returns, and an OSError it raises (a client gone) ends it quietly."""

    def __init__(self, path: str, serve: Callable[[socket.socket, int], None]):
        self.path = path
        self.connections = 0
        self._serve = serve
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def start(self) -> UnixListener:
        self._listener.bind(self.path)
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening; the socket file stays, as a stopped service's does (connecting is then refused)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _address = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(connection, self.connections), daemon=True).start()

    def _run(self, connection: socket.socket, number: int) -> None:
        with connection, contextlib.suppress(OSError):
            self._serve(connection, number)
