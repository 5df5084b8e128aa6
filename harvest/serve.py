"""Serve a local folder over HTTP on loopback, for ``kind: served`` sources (demo and tests)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bastion.errors import MissingResourceError

log = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files over HTTP/1.1 (keep-alive); access lines go to the debug log, not stderr."""

    protocol_version = "HTTP/1.1"

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8",
        ".htm": "text/html; charset=utf-8",
        ".xml": "application/xml",
        ".txt": "text/plain",
    }

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("serve %s - %s", self.address_string(), format % args)


@contextmanager
def serve_folder(folder: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``folder`` at ``http://host:port`` (port 0: any free port) in a daemon thread; yields
    the base URL without a trailing slash and stops the server on exit."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise MissingResourceError(f"cannot serve {root}: not a folder")
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise MissingResourceError(f"cannot listen on {host}:{port} to serve {root}: {exc}") from exc
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"serve-{root.name}", daemon=True
    )
    thread.start()
    bound_port = server.server_address[1]
    base_url = f"http://{host}:{bound_port}"
    log.info("serving %s at %s", root, base_url)
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
