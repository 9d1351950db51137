"""A hostile web site on 127.0.0.1, shared by the crawl, download and service tests.

It serves what broke the crawler and the guards in issue 16's probes: pages with charsets
that are no text encodings (``rot13``, ``hex``), an undeclared windows-1252 page, a body
that stalls after its headers, a body shorter than its Content-Length, robots.txt that is
huge (6 MB), trickled past the timeout, stalled, or a 5xx, and redirects to ``ftp:``, to a
6to4 and to a NAT64 form of the link-local metadata address. Every request is logged;
every stall ends at teardown (:attr:`HostileSite.release`), so tests stay bounded in time.

Loaded by ``tests/conftest.py`` (fixtures ``hostile_site`` and ``hostile``).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

HOST = "127.0.0.1"
OTHER_LOOPBACK = "127.0.0.2"  # also loopback on Linux; never allow-listed in the tests
ROBOTS = "User-agent: *\nDisallow: /private/\n"
HUGE_ROBOTS_BYTES = 6_000_000
STALL_S = 30.0  # far past every client timeout used with this site; ended at teardown
CAFE = "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e on the \u201cterrace\u201d"


def png(color: tuple[int, int, int] = (200, 40, 40), size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def page(title: str, image: str, alt: str) -> str:
    return (
        f"<html><head><title>{title}</title></head><body><article><p>{title}</p>"
        f"<img src='{image}' alt='{alt}'></article></body></html>"
    )


# path -> (Content-Type, body)
PAGES: dict[str, tuple[str, bytes]] = {
    "/ok.html": ("text/html; charset=utf-8", page("A fine page", "/img/ok.png", "a red square").encode()),
    "/rot13.html": ("text/html; charset=rot13", page("Rot13", "/img/r.png", "a rot13 page").encode()),
    "/hex.html": ("text/html; charset=hex", page("Hex", "/img/h.png", "a hex page").encode()),
    "/undeclared.html": ("text/html", page("Undeclared", "/img/u.png", CAFE).encode("cp1252")),
    "/private/secret.html": ("text/html", page("Secret", "/img/s.png", "a secret").encode()),
}
# a page whose images fail in every way a download rerun must tell apart: two fine ones, two
# that fail once (500, then 429 with Retry-After) and then answer, a 404, one robots forbid
MIXED_IMAGES = {"/img/m1.png": "a red square one", "/img/m2.png": "a red square two",
                "/flaky/500/m3.png": "a flaky square", "/flaky/429/m4.png": "a busy square",
                "/gone/m5.jpg": "a missing square", "/private/m6.png": "a private square"}
PAGES["/mixed.html"] = ("text/html; charset=utf-8", (
    "<html><head><title>Mixed</title></head><body>" + "".join(
        f"<figure><img src='{src}' alt='{alt}'></figure>" for src, alt in MIXED_IMAGES.items())
    + "</body></html>").encode())
HOSTILE_PAGES = ("/rot13.html", "/hex.html", "/undeclared.html", "/stall.html", "/short.html")
INDEX = "".join(f"<a href='{p}'>{p}</a> " for p in ("/ok.html", *HOSTILE_PAGES))
PAGES["/index.html"] = ("text/html; charset=utf-8", f"<html><body>{INDEX}</body></html>".encode())


@dataclass
class HostileSite:
    """The running site: change ``robots`` between requests to change robots.txt."""

    host: str
    port: int
    robots: str = "ok"
    """``ok``, ``huge``, ``slow`` (trickled), ``stall``, ``503`` or ``404``."""
    redirect_port: int = 0
    """The port the ``ftp:`` redirect points at (on 127.0.0.2)."""
    log: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def paths(self) -> list[str]:
        return list(self.log)


def _handler(site: HostileSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            site.log.append(self.path)
            path = self.path.split("?")[0]
            routes = {
                "/robots.txt": self._robots,
                "/stall.html": self._stall,
                "/short.html": self._short,
                "/to-ftp": lambda: self._redirect(
                    f"ftp://{OTHER_LOOPBACK}:{site.redirect_port}/x.png"
                ),
                "/to-6to4": lambda: self._redirect("http://[2002:a9fe:a9fe::1]/latest/meta-data/"),
                "/to-nat64": lambda: self._redirect("http://[64:ff9b::a9fe:a9fe]/latest/"),
            }
            if path in routes:
                return routes[path]()
            if path.startswith("/flaky/"):  # /flaky/<status>/<name>.png: <status> the first time
                if site.log.count(self.path) == 1:
                    return self._send(int(path.split("/")[2]), "text/plain", b"try again",
                                      {"Retry-After": "0"})
                return self._send(200, "image/png", png())
            if path in PAGES:
                return self._send(200, *PAGES[path])
            if path.endswith(".png"):
                return self._send(200, "image/png", png())
            return self._send(404, "text/plain", b"not found")

        def _send(self, status: int, ctype: str, body: bytes,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _headers_then_stall(self, ctype: str, length: int, first: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(first)
            self.wfile.flush()
            site.release.wait(STALL_S)
            self.close_connection = True

        def _stall(self) -> None:
            self._headers_then_stall("text/html", 4000, b"<html><body><p>")

        def _short(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"<html><body><p>only the first hundred bytes</p>" + b" " * 52)
            self.wfile.flush()
            self.close_connection = True  # closes with 4,900 bytes missing

        def _robots(self) -> None:
            mode = site.robots
            if mode == "ok":
                return self._send(200, "text/plain", ROBOTS.encode())
            if mode in ("503", "404"):
                return self._send(int(mode), "text/plain", b"robots.txt is not here")
            if mode == "huge":  # the rules, padding to 6 MB, a rule past 500 KiB
                pad = b"# padding\n" * ((HUGE_ROBOTS_BYTES - 100) // 10)
                body = ROBOTS.encode() + pad + b"Disallow: /late/\n"
                return self._send(200, "text/plain", body)
            if mode == "stall":
                return self._headers_then_stall("text/plain", len(ROBOTS), b"User-agent: *\n")
            if mode == "slow":  # one short line every 0.1 s: each read is quick, the whole is not
                lines = [b"User-agent: *\n"] + [b"# waiting\n"] * 300 + [b"Allow: /\n"]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(sum(map(len, lines))))
                self.end_headers()
                for line in lines:
                    if site.release.wait(0.1):
                        break
                    self.wfile.write(line)
                    self.wfile.flush()
                self.close_connection = True
                return None
            raise ValueError(f"robots mode {mode!r}")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on stalls and oversized bodies: that is the point


@contextlib.contextmanager
def serve_hostile(host: str = HOST, port: int = 0) -> Iterator[HostileSite]:
    """Serve the hostile site on ``host:port`` (0: a free port) until the block ends."""
    site = HostileSite(host, port)
    server = _Server((host, port), _handler(site))
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class Listener:
    """A TCP port that only records who connected (stands in for an FTP or internal host)."""

    host: str
    port: int
    connections: list[tuple[str, int]] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)


@contextlib.contextmanager
def listen(host: str, port: int = 0, reply: bytes = b"") -> Iterator[Listener]:
    """Accept connections on ``host:port``, record them and their first bytes, send
    ``reply`` (e.g. an HTTP response) and close."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(8)
    sock.settimeout(0.2)
    listener = Listener(host, sock.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = sock.accept()
            except (TimeoutError, OSError):
                continue
            listener.connections.append(peer)
            with conn:
                conn.settimeout(1.0)
                with contextlib.suppress(OSError):
                    listener.requests.append(conn.recv(4096))
                    conn.sendall(reply)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def http_reply(body: bytes, ctype: str = "text/plain") -> bytes:
    """A whole HTTP/1.0 response, for :func:`listen`."""
    head = f"HTTP/1.0 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def wait_for(predicate, timeout_s: float = 5.0) -> bool:  # noqa: ANN001
    """Poll ``predicate`` until it is true or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
