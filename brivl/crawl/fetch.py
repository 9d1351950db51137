"""HTTP fetching for the crawler: guarded redirects, size cap, timeouts, charset decoding.

Redirects are followed by hand so that every hop is checked by the SSRF guard and by
robots.txt *before* it is requested, and every connection goes to the address the guard
checked (:class:`PinnedAdapter`: urllib3 never resolves a name itself). Failures come back
as a :class:`Fetched` with ``error`` set, never as exceptions: a body that stalls is a
``timeout``, one shorter than its Content-Length is ``truncated``.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3.exceptions
from charset_normalizer import from_bytes
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

from brivl.crawl.guard import AddressGuard, BlockedURL
from brivl.crawl.robots import ROBOTS_MAX_BYTES, RobotsFile

REDIRECT_CODES = (301, 302, 303, 307, 308)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
SNIFF_BYTES = 65536
WEB_DEFAULT = "cp1252"  # WHATWG: the legacy default of undeclared pages


@dataclass
class Fetched:
    """The outcome of one fetch. ``error`` is a short code ("" on a response)."""

    url: str
    final_url: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""
    detail: str = ""
    elapsed_s: float = 0.0
    truncated: bool = False
    """The body was cut at the size cap (only when the fetch asked for that)."""

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def header_charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header, if any."""
    if not content_type:
        return None
    msg = Message()
    msg["content-type"] = content_type
    charset = msg.get_param("charset")
    return str(charset).strip() if charset else None


def _known(charset: str | None) -> str | None:
    """The codec name of a *text* encoding; ``None`` for unknown names and for codecs that
    are no character encodings (``rot13``, ``hex``, ``base64``: ``bytes.decode`` refuses them)."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def sniff_charset(body: bytes) -> str | None:
    """The most likely encoding of undeclared bytes (charset-normalizer); among equally good
    guesses windows-1252, the web's legacy default, wins."""
    matches = list(from_bytes(body[:SNIFF_BYTES]))
    if not matches:
        return None
    best = matches[0]
    tied = {m.encoding for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    return WEB_DEFAULT if WEB_DEFAULT in tied else best.encoding


def decode_html(body: bytes, content_type: str = "") -> tuple[str, str]:
    """Decode an HTML body: BOM, then the HTTP header charset, then ``<meta charset>``; an
    undeclared (or unknown) charset is UTF-8 when the bytes are valid UTF-8, else sniffed.
    A declared charset the bytes are not valid in (a page saying UTF-8 and sending
    windows-1252) gives way to the next declaration, then to the undeclared rules, so its
    text does not come out as U+FFFD. Returns ``(text, encoding used)``; only bytes
    invalid in the final guess are replaced."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace"), name
    match = _META_CHARSET.search(body[:4096])
    declared = (_known(header_charset(content_type)),
                _known(match.group(1).decode("ascii", "ignore")) if match else None)
    for candidate in dict.fromkeys(c for c in (*declared, "utf-8") if c):
        try:
            return body.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    encoding = _known(sniff_charset(body)) or WEB_DEFAULT
    return body.decode(encoding, errors="replace"), encoding


class _PinnedConnection:
    """urllib3 connection mixin: connect to the guard's checked address, never re-resolve."""

    guard: AddressGuard

    def _new_conn(self):  # noqa: ANN202 - urllib3's signature
        def connect(address: tuple[str, int]):  # noqa: ANN202
            return urllib3_connection.create_connection(
                address,
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )

        try:
            return self.guard.open_connection(self._dns_host, self.port, connect)
        except TimeoutError as exc:
            raise urllib3.exceptions.ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(
                self, f"Failed to establish a new connection: {exc}"
            ) from exc


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through :meth:`AddressGuard.open_connection`
    (a refused address raises :class:`BlockedURL` out of ``session.get``)."""

    def __init__(self, guard: AddressGuard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool, conn in (
            ("http", HTTPConnectionPool, HTTPConnection),
            ("https", HTTPSConnectionPool, HTTPSConnection),
        ):
            pinned = type(f"Pinned{conn.__name__}", (_PinnedConnection, conn), {"guard": self.guard})
            pools[scheme] = type(f"Pinned{pool.__name__}", (pool,), {"ConnectionCls": pinned})
        self.poolmanager.pool_classes_by_scheme = pools


class Fetcher:
    """Thread-safe fetcher: one requests session per thread, no proxies from the environment.

    ``robots_allowed(url)`` (optional) is consulted before every hop, ``guard`` checks every
    hop's address; ``max_bytes`` caps the body; ``timeout_s`` bounds connect and each read,
    ``total_timeout_s`` the whole transfer.
    """

    def __init__(
        self,
        guard: AddressGuard,
        user_agent: str,
        *,
        timeout_s: float = 10.0,
        total_timeout_s: float = 30.0,
        max_bytes: int = 5_000_000,
        max_redirects: int = 5,
    ) -> None:
        self.guard = guard
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never route through an environment proxy
            for prefix in ("http://", "https://"):
                session.mount(prefix, PinnedAdapter(self.guard))
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
        return session

    def fetch(
        self,
        url: str,
        robots_allowed: Callable[[str], bool] | None = None,
        *,
        max_bytes: int | None = None,
        truncate: bool = False,
    ) -> Fetched:
        """GET ``url`` following redirects, each hop checked first. A body over ``max_bytes``
        (default: the fetcher's) is ``too_large``, or with ``truncate`` cut at the cap."""
        start = time.monotonic()
        current = url
        for _hop in range(self.max_redirects + 1):
            try:
                self.guard.check(current)
            except BlockedURL as exc:
                return self._fail(url, current, start, exc.reason, exc.detail)
            if robots_allowed is not None and not robots_allowed(current):
                where = "" if current == url else f"redirect target {current} "
                return self._fail(
                    url, current, start, "robots_disallowed", f"{where}disallowed by robots.txt"
                )
            result = self._get_once(url, current, start, max_bytes or self.max_bytes, truncate)
            if result.status in REDIRECT_CODES and not result.error:
                location = result.headers.get("location")
                if not location:
                    return result
                current = urljoin(current, location)
                continue
            return result
        return self._fail(
            url, current, start, "redirect_loop", f"over {self.max_redirects} redirects"
        )

    def fetch_robots(self, robots_url: str) -> RobotsFile:
        """Fetch a robots.txt (its own fetch is never robots-checked).

        RFC 9309: the first 500 KiB of a larger file are parsed (up to its last whole line);
        any failure to get a whole response (refused address, network error, timeout,
        truncated body) makes the file unreachable (status 0), which means "disallow all".
        """
        got = self.fetch(robots_url, max_bytes=ROBOTS_MAX_BYTES, truncate=True)
        if got.error:
            status = f" after HTTP {got.status}" if got.status else ""
            return RobotsFile(0, "", f"{got.error}{status}: {got.detail}")
        text = got.body.decode("utf-8", errors="replace")
        if got.truncated:
            text = text[: text.rfind("\n") + 1]
        return RobotsFile(got.status, text)

    def _get_once(
        self, url: str, current: str, start: float, max_bytes: int, truncate: bool
    ) -> Fetched:
        try:
            with self._session().get(
                current, stream=True, allow_redirects=False, timeout=self.timeout_s
            ) as resp:
                out = Fetched(url, current, resp.status_code)
                out.headers = {k.lower(): v for k, v in resp.headers.items()}
                if resp.status_code in REDIRECT_CODES:
                    return out
                return self._read_body(resp, out, start, max_bytes, truncate)
        except BlockedURL as exc:  # the pinned connection refused the address it resolved
            return self._fail(url, current, start, exc.reason, exc.detail)
        except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError) as exc:
            return self._fail(url, current, start, "timeout", str(exc))
        except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as exc:
            return self._fail(url, current, start, "truncated", str(exc))
        except urllib3.exceptions.DecodeError as exc:
            return self._fail(url, current, start, "decode_error", str(exc))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            return self._fail(url, current, start, "connection_error", str(exc))

    def _read_body(
        self, resp: requests.Response, out: Fetched, start: float, max_bytes: int, truncate: bool
    ) -> Fetched:
        """Read a streamed body under the size cap and the total deadline."""
        url, current = out.url, out.final_url
        try:
            declared = int(out.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > max_bytes and not truncate:
            return self._fail(url, current, start, "too_large", f"{declared} bytes", out)
        chunks, size = [], 0
        while chunk := resp.raw.read1(65536, decode_content=True):
            if size + len(chunk) > max_bytes:
                if not truncate:
                    return self._fail(url, current, start, "too_large", f"over {max_bytes} bytes", out)
                chunks.append(chunk[: max_bytes - size])
                out.truncated = True
                break
            size += len(chunk)
            if time.monotonic() - start > self.total_timeout_s:
                return self._fail(url, current, start, "timeout", "total time", out)
            chunks.append(chunk)
        out.body = b"".join(chunks)
        out.elapsed_s = time.monotonic() - start
        return out

    @staticmethod
    def _fail(
        url: str, current: str, start: float, error: str, detail: str, base: Fetched | None = None
    ) -> Fetched:
        out = base or Fetched(url, current)
        out.error, out.detail = error, detail[:300]
        out.body = b""
        out.elapsed_s = time.monotonic() - start
        return out
