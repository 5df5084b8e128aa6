"""A real HTTP server for crawler tests: routes map paths to behaviours, every request is logged
with its arrival time, so tests can check pacing server-side.

Arrival times are the kernel's receive timestamps of each request's first bytes (Linux
``SO_TIMESTAMPNS``, read with ``MSG_PEEK``; wall-clock seconds), not the moment a handler thread
got scheduled: a loaded machine delays threads by tens of milliseconds, which would make correct
pacing look wrong. Elsewhere the handler's ``time.time()`` is used.

Bind it to 127.0.0.1, 127.0.0.2, 127.0.0.3... (all loopback on Linux) to act as several hosts.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SO_TIMESTAMPNS = 35  # Linux (asm-generic); the socket module does not export it


@dataclass
class Reply:
    """What the server answers for one request."""

    status: int = 200
    body: bytes | str = b""
    content_type: str | None = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    stream_chunks: int = 0  # >0: send the body in this many chunks without Content-Length
    chunk_pause: float = 0.0  # seconds between streamed chunks
    content_length: int | None = None  # announce this length instead of the real one


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    time: float
    host: str
    path: str  # path with query
    count: int  # how many times this path was requested, this one included


Route = Reply | Callable[[Hit], Reply]


def page(*links: str, title: str = "page", text: str = "", head: str = "") -> str:
    """A small HTML page with the given links."""
    anchors = "\n".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    text = text or f"Some documentation text about {title}."
    return (
        f"<!doctype html><html><head><title>{title}</title>{head}</head><body><h1>{title}</h1>"
        f"<p>{text}</p><ul>{anchors}</ul></body></html>"
    )


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect reply."""
    return Reply(status=status, body=b"", headers={"Location": location})


class FixtureServer:
    """``with FixtureServer(routes, host="127.0.0.2") as srv: srv.url("/x")``.

    ``routes`` maps a path (with query, or without it, or a prefix ending in ``*``) to a
    :class:`Reply` or to a function of the :class:`Hit` returning one. Unknown paths: 404.
    ``robots`` (text) is served at /robots.txt unless a route says otherwise.
    """

    def __init__(
        self, routes: Mapping[str, Route] | None = None, host: str = "127.0.0.1", robots: str | None = None
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        if robots is not None and "/robots.txt" not in self.routes:
            self.routes["/robots.txt"] = Reply(body=robots, content_type="text/plain")
        self.host = host
        self.hits: list[Hit] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> FixtureServer:
        self._server = _QuietServer((self.host, 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def netloc(self) -> str:
        return self.base_url.split("://", 1)[1]

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    # -- inspection -----------------------------------------------------------------------------
    def paths(self) -> list[str]:
        with self._lock:
            return [h.path for h in self.hits]

    def times(self, paths: Iterable[str] | None = None) -> list[float]:
        wanted = set(paths) if paths is not None else None
        with self._lock:
            return [h.time for h in self.hits if wanted is None or h.path in wanted]

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts.get(path, 0)

    # -- serving --------------------------------------------------------------------------------
    def record(self, path: str, arrival: float) -> Hit:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            hit = Hit(arrival, self.host, path, self._counts[path])
            self.hits.append(hit)
        return hit

    def reply_for(self, hit: Hit) -> Reply:
        route = self.routes.get(hit.path)
        if route is None:
            route = self.routes.get(urlsplit(hit.path).path)
        if route is None:
            prefixes = [p for p in self.routes if p.endswith("*") and hit.path.startswith(p[:-1])]
            if prefixes:
                route = self.routes[max(prefixes, key=len)]
        if route is None:
            return Reply(status=404, body="not found", content_type="text/plain")
        return route(hit) if callable(route) else route


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (size limits, timeouts) are expected: no tracebacks on stderr.

    Timestamping is switched on for the LISTENING socket: accepted sockets inherit it, and the
    kernel stamps packets on arrival only while some socket asks for it (else a request that
    arrives before the handler thread starts would be stamped when it is read).
    """

    def server_bind(self) -> None:
        if sys.platform.startswith("linux"):
            self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fixture: client %s went away", client_address)


def _make_handler(site: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        arrival = 0.0

        def setup(self) -> None:
            super().setup()
            if sys.platform.startswith("linux"):
                self.connection.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

        def handle_one_request(self) -> None:
            self.arrival = self._peek_arrival()
            super().handle_one_request()

        def _peek_arrival(self) -> float:
            """Kernel receive time of the next request's first byte (blocks until it comes)."""
            if not sys.platform.startswith("linux"):
                return time.time()
            try:
                _, ancillary, _, _ = self.connection.recvmsg(1, socket.CMSG_SPACE(16), socket.MSG_PEEK)
            except OSError:
                return time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    seconds, nanos = struct.unpack("qq", data[:16])
                    return seconds + nanos / 1e9
            return time.time()

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            hit = site.record(self.path, self.arrival)
            reply = site.reply_for(hit)
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send(self, reply: Reply) -> None:
            if reply.delay:
                time.sleep(reply.delay)
            body = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.stream_chunks:
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                size = max(1, len(body) // reply.stream_chunks)
                for start in range(0, len(body), size):
                    self.wfile.write(body[start : start + size])
                    self.wfile.flush()
                    if reply.chunk_pause:
                        time.sleep(reply.chunk_pause)
                return
            self.send_header("Content-Length", str(reply.content_length or len(body)))
            self.end_headers()
            if reply.content_length and reply.content_length > len(body):
                self.close_connection = True  # announced more than we send: a lie, close after
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("fixture %s", format % args)

    return Handler


ALLOW_ALL = "User-agent: *\nAllow: /\n"


def doc_site(tag: str, n_pages: int, latency: float) -> dict[str, Reply]:
    """Routes of a documentation site: robots.txt allowing all, an index at / linking to ``n_pages - 1``
    pages, each page linking to /, its previous and its next page; every reply after ``latency`` s."""
    paths = [f"/docs/{tag}-page-{i:03d}" for i in range(1, n_pages)]
    routes: dict[str, Reply] = {
        "/robots.txt": Reply(body=ALLOW_ALL, content_type="text/plain", delay=latency),
        "/": Reply(body=page(*paths, title=f"{tag} documentation"), delay=latency),
    }
    for i, path in enumerate(paths):
        nav = ["/"] + [paths[j] for j in (i - 1, i + 1) if 0 <= j < len(paths)]
        text = f"Section {i + 1} of the {tag} guide explains one configuration option in detail. " * 8
        routes[path] = Reply(body=page(*nav, title=f"{tag} page {i + 1}", text=text), delay=latency)
    return routes
