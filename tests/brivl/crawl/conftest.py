"""A tiny hand-written site on 127.0.0.1 with robots rules, opt-outs and charsets."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()

ROBOTS = "User-agent: *\nDisallow: /private/\n\nUser-agent: otherbot\nDisallow: /\n"

PAGES: dict[str, tuple[str, bytes]] = {
    "/index.html": (
        "text/html; charset=utf-8",
        b"""<html><head><title>Index</title></head><body>
<a href="/a.html">a</a> <a href="/latin.html">latin</a> <a href="/meta1252.html">meta</a>
<a href="/private/secret.html">secret</a> <a href="/hop">hop</a> <a href="/optout.html">o</a>
<a href="http://other.example/x.html">elsewhere</a> <a href="/missing.html">gone</a>
</body></html>""",
    ),
    "/a.html": (
        "text/html",
        b"""<html><body><article>
<p>The morning market opened late.</p>
<figure><img src="/img/cat.png" alt="A grey cat on a red sofa" title="cat">
<figcaption>Our office cat</figcaption></figure>
<p>Prices of tea went up again.</p>
<p>Short <img src="img/x.png" alt="x"> inline text here.</p>
<img src="/private/hidden.png" alt="hidden image in a private folder">
<img src="http://10.1.2.3/internal.png" alt="internal address image">
<img src="/img/cat.png" alt="the same image twice">
<a href="/deeper.html">deeper</a>
</article></body></html>""",
    ),
    "/deeper.html": (
        "text/html",
        b"<html><body><img src='/img/deep.png' alt='deep'></body></html>",
    ),
    "/latin.html": (
        "text/html; charset=iso-8859-1",
        "<html><body><img src='/img/c.png' alt='Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e'></body></html>".encode(
            "iso-8859-1"
        ),
    ),
    "/meta1252.html": (
        "text/html",
        "<html><head><meta charset='windows-1252'></head><body>"
        "<img src='/img/d.png' alt='\u201cquoted\u201d na\u00efve'></body></html>".encode("cp1252"),
    ),
    "/optout.html": (
        "text/html",
        b"<html><head><meta name='robots' content='noimageai'></head><body>"
        b"<img src='/img/o.png' alt='an opted out picture'></body></html>",
    ),
    "/private/secret.html": ("text/html", b"<html><body><img src='/img/s.png'></body></html>"),
}


@dataclass
class FixtureSite:
    base_url: str
    host: str
    port: int
    access_log: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [p for _m, p, _ua in self.access_log]


def make_handler(site: FixtureSite):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            site.access_log.append(("GET", self.path, self.headers.get("User-Agent", "")))
            if self.path == "/robots.txt":
                return self._send(200, "text/plain", ROBOTS.encode())
            if self.path == "/hop":
                self.send_response(302)
                self.send_header("Location", "/private/landing.html")
                self.end_headers()
                return None
            if self.path in PAGES:
                ctype, body = PAGES[self.path]
                return self._send(200, ctype, body)
            if self.path.endswith(".png"):
                return self._send(200, "image/png", PNG)
            return self._send(404, "text/plain", b"not found")

        def _send(self, status, ctype, body):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def fixture_site():
    site = FixtureSite("", "127.0.0.1", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(site))
    site.port = server.server_address[1]
    site.base_url = f"http://127.0.0.1:{site.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
