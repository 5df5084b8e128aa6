"""Serve a local folder over HTTP on loopback, for ``kind: served`` sources (demo and tests).

Only what a documentation crawl reads is served: the file types harvest extracts
(``harvest.extract.LOCAL_TYPES``: HTML, Markdown, text, PDF) plus XML sitemaps. Never served:
hidden files and folders (any name starting with '.', such as ``.git``, ``.env``, ``.ssh``),
directory listings (a folder without ``index.html`` is a 404), and files whose real location is
outside the served folder (a symbolic link out of it). A client that disconnects mid-reply is
logged at debug level, without a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bastion.errors import MissingResourceError
from harvest.extract import LOCAL_TYPES, is_hidden

log = logging.getLogger(__name__)

#: file suffixes served: the documentation types harvest reads, and sitemaps
SERVED_SUFFIXES = frozenset(LOCAL_TYPES) | {".xml"}
INDEX_FILES = ("index.html", "index.htm")


class _DocsHandler(SimpleHTTPRequestHandler):
    """Documentation files over HTTP/1.1 (keep-alive); access lines go to the debug log, not stderr."""

    protocol_version = "HTTP/1.1"

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8",
        ".htm": "text/html; charset=utf-8",
        ".md": "text/markdown; charset=utf-8",
        ".markdown": "text/markdown; charset=utf-8",
        ".xml": "application/xml",
        ".txt": "text/plain",
        ".pdf": "application/pdf",
    }

    def send_head(self) -> Any:
        if not self._allowed():
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def _allowed(self) -> bool:
        """Whether the request names a served file (or a folder with an index page)."""
        url_path = unquote(urlsplit(self.path).path)
        if any(is_hidden(part) for part in url_path.split("/")):
            return False
        target = Path(self.translate_path(self.path))
        if target.is_dir():
            if not url_path.endswith("/"):
                return True  # the base class redirects to the folder's URL with a slash
            index = next((target / name for name in INDEX_FILES if (target / name).is_file()), None)
            if index is None:
                return False  # no directory listings
            target = index
        if target.suffix.lower() not in SERVED_SUFFIXES:
            return False
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return real.is_relative_to(Path(self.directory).resolve())

    def list_directory(self, path: Any) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")
        return None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("serve %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """A threading server that logs a client's disconnect instead of printing a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # BrokenPipe, ConnectionReset, ...
            log.debug("serve: client %s went away (%s)", client_address, type(exc).__name__)
        else:
            log.warning("serve: request from %s failed: %s: %s", client_address, type(exc).__name__, exc)


@contextmanager
def serve_folder(folder: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``folder`` at ``http://host:port`` (port 0: any free port) in a daemon thread; yields
    the base URL without a trailing slash and stops the server on exit."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise MissingResourceError(f"cannot serve {root}: not a folder")
    handler = functools.partial(_DocsHandler, directory=str(root))
    try:
        server = _Server((host, port), handler)
    except OSError as exc:
        raise MissingResourceError(f"cannot listen on {host}:{port} to serve {root}: {exc}") from exc
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
