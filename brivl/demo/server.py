"""Serve a demo site (anything with ``response(path)``: :class:`Site`) over HTTP on loopback,
in a daemon thread.

``with serve(site) as server:`` gives ``server.base_url``, ``server.seed_urls`` and an
``access_log`` of every request (method, path, status, user agent). Each request runs in its
own thread, so a slow body never holds up other requests.

``with serve_at(site, port) as server:`` names the site by ``http://127.0.0.1:port`` (its
``origin`` and seeds) whether or not that port is free: when it is taken, the server listens
on a free port and a port forward (:mod:`brivl.crawl.forward`) sends this process's guarded
connections there, so a crawl of it has the same identity and rows on any port.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

from brivl.crawl.forward import PortForward, forwarding
from brivl.demo.site import Response


class Site(Protocol):
    """What the server needs from a site: a response per URL path (the synthetic
    :class:`~brivl.demo.site.DemoSite` and the clip-art site both have one)."""

    def response(self, path: str) -> Response: ...


class AccessRecord(NamedTuple):
    method: str
    path: str  # as requested, query string included
    status: int
    user_agent: str


class AccessLog(list):
    """A list of :class:`AccessRecord`, appended to under a lock by the server's threads."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def record(self, entry: AccessRecord) -> None:
        with self._lock:
            self.append(entry)

    def snapshot(self) -> list[AccessRecord]:
        with self._lock:
            return list(self)

    def paths(self) -> list[str]:
        """Requested paths without query strings, in order."""
        return [urlsplit(r.path).path for r in self.snapshot()]


class DemoServer:
    """A running demo web; a context manager that stops the server on exit.

    ``base_url`` is where it listens; ``origin`` (and ``seed_urls``) how stages name it:
    ``http://host:origin_port``, the listening port unless another is given."""

    def __init__(self, site: Site, host: str = "127.0.0.1", port: int = 0,
                 origin_port: int | None = None) -> None:
        self.site = site
        self.access_log = AccessLog()
        handler = type("DemoHandler", (_Handler,), {"site": site, "log": self.access_log})
        self._httpd = _Server((host, port), handler)
        self.host, self.port = self._httpd.server_address[:2]
        self.base_url = f"http://{self.host}:{self.port}"
        self.origin = f"http://{self.host}:{origin_port or self.port}"
        self.seed_urls = [self.origin + "/"]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"demo-web:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base_url + path

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(site: Site, host: str = "127.0.0.1", port: int = 0) -> DemoServer:
    """Start serving ``site`` on ``host:port`` (``port=0``: a free port); returns the server."""
    return DemoServer(site, host, port)


@contextlib.contextmanager
def serve_at(site: Site, port: int, host: str = "127.0.0.1") -> Iterator[DemoServer]:
    """Serve ``site`` as ``http://host:port``: on that port when it is free, else on a free
    one with a port forward from ``host:port`` for the block (``origin`` names ``port``)."""
    try:
        server = DemoServer(site, host, port, origin_port=port)
    except OSError:  # taken (by another demo, or anything else)
        server = DemoServer(site, host, 0, origin_port=port)
    moved = server.port != port
    with server, (forwarding(PortForward(server.host, port, server.port)) if moved
                  else contextlib.nullcontext()):
        yield server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    site: Site
    log: AccessLog
    protocol_version = "HTTP/1.1"
    server_version = "BrivlDemoWeb/1.0"
    timeout = 30  # idle keep-alive connections are closed after this

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        response = self.site.response(unquote(urlsplit(self.path).path))
        self.log.record(
            AccessRecord(
                self.command, self.path, response.status, self.headers.get("User-Agent", "")
            )
        )
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self._write_body(response)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _write_body(self, response: Response) -> None:
        """The body; a slow one sends half, stalls ``trickle_seconds``, then sends the rest,
        so any client timeout below that (per read or in total) fires."""
        body = response.body
        if response.trickle_seconds > 0:
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            time.sleep(response.trickle_seconds)
            body = body[half:]
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet server
        pass
