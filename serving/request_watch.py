"""Cutting a blocking httpx request off from another thread: at a deadline, when a stop flag
is set, or on demand (the engine closing). httpx has timeouts per read, not per request, and
a read blocked on a silent socket wakes only when the socket is shut down (closing it is not
enough): so the connections a client opens are noted as they are made (httpx's `trace`
request extension) and a watch thread shuts them down.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from typing import Any

WATCH_EVERY_S = 0.1  # how often a request's watch looks at the clock and the stop flag


class Connections:
    """The connections an engine's client opened (noted through httpx's `trace` request
    extension as each is made), so that another thread can cut a request off: shutting its
    socket down wakes a read blocked on it, where closing it does not."""

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()  # httpcore network streams
        self._lock = threading.Lock()

    def note(self, stream: Any) -> None:
        with self._lock:
            self._streams.add(stream)

    def shut_all(self) -> None:
        """Shut every open one down; an idle kept-alive one is then replaced at its next use."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            shut(stream)


def shut(stream: Any) -> None:
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # closed already
            sock.shutdown(socket.SHUT_RDWR)


class RequestWatch:
    """One request watched from a thread of its own: at `deadline` (time.monotonic()) or when
    `stop` is set, it is cut off (the client's connections shut down); `cut` does the same
    from any thread. `why` says what cut it."""

    CONNECTED = (".connect_tcp.complete", ".connect_unix_socket.complete", ".start_tls.complete")

    def __init__(self, connections: Connections, deadline: float, stop: threading.Event | None):
        self.deadline = deadline
        self.why: str | None = None
        self._connections = connections
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="twin-openai-watch", daemon=True)

    def __enter__(self) -> RequestWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's `trace` extension: note each connection the request makes; one made after
        the cut is shut down at once."""
        if event.endswith(self.CONNECTED) and info.get("return_value") is not None:
            self._connections.note(info["return_value"])
            if self.why is not None:
                shut(info["return_value"])

    def cut(self, why: str) -> None:
        if self.why is None:
            self.why = why
        self._connections.shut_all()

    def _watch(self) -> None:
        while not self._done.wait(WATCH_EVERY_S):
            if self._stop is not None and self._stop.is_set():
                self.cut("stopped")
                return
            if time.monotonic() >= self.deadline:
                self.cut("deadline")
                return
