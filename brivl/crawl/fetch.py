"""HTTP fetching for the crawler: guarded redirects, size cap, timeouts, charset decoding.

Redirects are followed by hand so that every hop is checked by the SSRF guard and by
robots.txt *before* it is requested. Failures come back as a :class:`Fetched` with
``error`` set, never as exceptions.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import urljoin

import requests

from brivl.crawl.guard import AddressGuard, BlockedURL
from brivl.crawl.robots import RobotsFile

REDIRECT_CODES = (301, 302, 303, 307, 308)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


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
    if not charset:
        return None
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None


def decode_html(body: bytes, content_type: str = "") -> tuple[str, str]:
    """Decode an HTML body: BOM, then the HTTP header charset, then ``<meta charset>``, then
    UTF-8; undecodable bytes are replaced. Returns ``(text, encoding used)``."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace"), name
    encoding = _known(header_charset(content_type))
    if encoding is None:
        match = _META_CHARSET.search(body[:4096])
        encoding = _known(match.group(1).decode("ascii", "ignore")) if match else None
    encoding = encoding or "utf-8"
    return body.decode(encoding, errors="replace"), encoding


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
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
        return session

    def fetch(self, url: str, robots_allowed: Callable[[str], bool] | None = None) -> Fetched:
        """GET ``url`` following redirects, each hop checked first."""
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
            result = self._get_once(url, current, start)
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
        """Fetch a robots.txt (its own fetch is never robots-checked)."""
        got = self.fetch(robots_url)
        if got.error and not got.status:
            return RobotsFile(0, "", f"{got.error}: {got.detail}")
        if got.error:
            return RobotsFile(got.status, "", got.error)
        return RobotsFile(got.status, got.body.decode("utf-8", errors="replace"))

    def _get_once(self, url: str, current: str, start: float) -> Fetched:
        try:
            with self._session().get(
                current, stream=True, allow_redirects=False, timeout=self.timeout_s
            ) as resp:
                headers = {k.lower(): v for k, v in resp.headers.items()}
                out = Fetched(url, current, resp.status_code, headers)
                if resp.status_code in REDIRECT_CODES:
                    return out
                declared = int(headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    return self._fail(url, current, start, "too_large", f"{declared} bytes", out)
                chunks, size = [], 0
                while chunk := resp.raw.read1(65536, decode_content=True):
                    size += len(chunk)
                    if size > self.max_bytes:
                        return self._fail(
                            url, current, start, "too_large", f"over {self.max_bytes} bytes", out
                        )
                    if time.monotonic() - start > self.total_timeout_s:
                        return self._fail(url, current, start, "timeout", "total time", out)
                    chunks.append(chunk)
                out.body = b"".join(chunks)
                out.elapsed_s = time.monotonic() - start
                return out
        except requests.Timeout as exc:
            return self._fail(url, current, start, "timeout", str(exc))
        except requests.RequestException as exc:
            return self._fail(url, current, start, "connection_error", str(exc))

    @staticmethod
    def _fail(
        url: str, current: str, start: float, error: str, detail: str, base: Fetched | None = None
    ) -> Fetched:
        out = base or Fetched(url, current)
        out.error, out.detail = error, detail[:300]
        out.body = b""
        out.elapsed_s = time.monotonic() - start
        return out
