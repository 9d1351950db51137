"""img2dataset's downloader with brivl's guards, run inside img2dataset's worker processes.

img2dataset fetches with ``urllib`` and decodes with OpenCV. :class:`GuardedDownloader`
(a subclass of img2dataset's ``Downloader``) adds, in each worker process:

- a urllib opener (:func:`build_guarded_opener`) that speaks http(s) only: every request
  and redirect hop, whatever its scheme (a redirect to ``ftp:``, ``file:`` or ``data:`` is
  refused, not followed), is checked against the SSRF guard and robots.txt before it is
  sent (refusals become error messages carrying ``brivl-guard:<reason>``); its connections
  go to the address the guard checked (:class:`PinnedHTTPConnection`: http.client never
  resolves a name itself, so DNS rebinding cannot switch it); it bounds each body's total
  transfer time and size, and ignores environment proxies;
- per-host politeness (:mod:`brivl.download.politeness`): concurrency and rate caps, 429/503
  back-off honouring ``Retry-After``, per-host stats written per process;
- an image sniffer in front of the resizer that reads only the image header: bodies that
  are no image, images whose header declares more than ``max_image_pixels`` pixels
  (decompression bombs) and images that fail to decode after a good header (truncated)
  get distinct error messages instead of img2dataset's one "Image decoding error".

:func:`guarded_img2dataset` makes ``img2dataset.download`` build this class for the
duration of one call (img2dataset has no hook for it).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from brivl.compat.img2dataset import Downloader, no_signal_handlers, patched_main
from brivl.crawl.fetch import Fetcher
from brivl.crawl.forward import PortForward
from brivl.crawl.guard import AddressGuard, BlockedURL
from brivl.crawl.robots import ALLOWED, UNAVAILABLE, RobotsCache, RobotsFile
from brivl.download import reasons
from brivl.download.politeness import HostStats, Politeness, PoliteOpener


@dataclass(frozen=True)
class GuardSettings:
    """What the worker processes need to guard their requests (picklable)."""

    allow_cidrs: tuple[str, ...] = ()
    robots_token: str = "brivl"
    robots_user_agent: str = "brivl-crawler/0.1"
    robots: dict[str, tuple[int, str]] = field(default_factory=dict)
    """robots.txt already fetched by the parent, by origin: ``(status, text)``."""
    max_image_pixels: int = 89_478_485
    sniff_images: bool = True
    timeout_s: float = 10.0
    max_image_bytes: int = 50_000_000
    forwards: tuple[PortForward, ...] = ()
    """The parent's port forwards (:mod:`brivl.crawl.forward`): workers do not share its memory."""
    politeness: Politeness = field(default_factory=Politeness)
    """Per-host caps and back-off of each worker process (:mod:`brivl.download.politeness`)."""
    stats_dir: str = ""
    """Where each worker process writes its per-host stats (``.hoststats-<pid>.stats``, JSON;
    hidden, and not named ``*.json``: img2dataset's logger reads every ``*.json`` in its output
    folder as a shard's stats); "" for none."""


def _refusal(reason: str, detail: str) -> urllib.error.URLError:
    return urllib.error.URLError(f"{reasons.GUARD_MARKER}{reason}: {detail}")


class GuardHandler(urllib.request.BaseHandler):
    """urllib request hook: scheme, SSRF guard and robots.txt before every request and
    redirect hop. ``default_open`` runs before any protocol handler, for every scheme."""

    handler_order = 100  # before everything else

    def __init__(self, settings: GuardSettings, guard: AddressGuard | None = None) -> None:
        self.guard = guard or AddressGuard(settings.allow_cidrs, forwards=settings.forwards)
        fetcher = Fetcher(self.guard, settings.robots_user_agent, timeout_s=settings.timeout_s)
        self.robots = RobotsCache(fetcher.fetch_robots, settings.robots_token)
        for site, (status, text) in settings.robots.items():
            self.robots.preload(site, RobotsFile(status, text))

    def default_open(self, request: urllib.request.Request) -> None:
        url = request.full_url
        try:
            self.guard.check(url)
        except BlockedURL as exc:
            raise _refusal(exc.reason, exc.detail) from None
        decision = self.robots.decision(url)
        if decision == UNAVAILABLE:
            raise _refusal(reasons.ROBOTS_UNAVAILABLE, f"robots.txt for {url} could not be fetched")
        if decision != ALLOWED:
            raise _refusal(reasons.ROBOTS_DISALLOWED, f"{url} disallowed by robots.txt")
        return None  # allowed: the protocol handler opens it


class PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client connection to the address the guard checked (never a second lookup)."""

    def __init__(self, *args: Any, guard: AddressGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        # http.client's hook, set per instance (socket.create_connection by default)
        self._create_connection = self._pinned_connection

    def _pinned_connection(
        self, address: tuple[str, int], timeout: Any, source_address: Any = None
    ) -> socket.socket:
        host, port = address
        try:
            return self.guard.open_connection(
                host, port, lambda ip_port: socket.create_connection(ip_port, timeout, source_address)
            )
        except BlockedURL as exc:
            raise _refusal(exc.reason, exc.detail) from None


class PinnedHTTPSConnection(PinnedHTTPConnection, http.client.HTTPSConnection):
    """TLS over :class:`PinnedHTTPConnection` (SNI and the certificate use the host name)."""


class PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self.guard = guard

    def http_open(self, request: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(PinnedHTTPConnection, guard=self.guard), request)


class PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self.guard = guard

    def https_open(self, request: urllib.request.Request) -> Any:
        connection = functools.partial(PinnedHTTPSConnection, guard=self.guard)
        return self.do_open(connection, request, context=self._context)


def build_guarded_opener(settings: GuardSettings) -> urllib.request.OpenerDirector:
    """An opener for http(s) only (no ftp, file or data handlers at all), guarded and pinned.

    One :class:`AddressGuard` serves the check and the connections, so both use the same
    DNS answers.
    """
    guard = AddressGuard(settings.allow_cidrs, forwards=settings.forwards)
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),
        urllib.request.UnknownHandler(),
        PinnedHTTPHandler(guard),
        PinnedHTTPSHandler(guard),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        GuardHandler(settings, guard),
        BodyLimitHandler(settings),
    ):
        opener.add_handler(handler)
    return opener


class BodyLimitHandler(urllib.request.BaseHandler):
    """urllib response hook: bounds a 2xx body's total transfer time and size.

    img2dataset's ``timeout`` is a socket timeout, which a body trickling in small pieces
    never trips; this makes it a deadline for the whole body too.
    """

    handler_order = 2000  # after HTTPErrorProcessor: only successful responses get here

    def __init__(self, settings: GuardSettings) -> None:
        self.deadline_s = settings.timeout_s
        self.max_bytes = settings.max_image_bytes

    def http_response(self, request: urllib.request.Request, response: Any) -> Any:
        if isinstance(response, LimitedResponse):
            return response  # a redirect's final response, already wrapped
        return LimitedResponse(response, self.deadline_s, self.max_bytes)

    https_response = http_response


class LimitedResponse:
    """A urllib response whose ``read()`` stops at a deadline or a size cap."""

    def __init__(self, response: Any, deadline_s: float, max_bytes: int) -> None:
        self._response = response
        self._deadline = time.monotonic() + deadline_s
        self._deadline_s = deadline_s
        self._max_bytes = max_bytes

    def read(self, amt: int | None = None) -> bytes:
        chunks, size = [], 0
        while amt is None or size < amt:
            if time.monotonic() > self._deadline:
                raise TimeoutError(f"body transfer timed out: over {self._deadline_s:g} s")
            chunk = self._response.read1(65536 if amt is None else min(65536, amt - size))
            if not chunk:
                break
            size += len(chunk)
            if size > self._max_bytes:
                raise ValueError(f"image body too large: over {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def __enter__(self) -> LimitedResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self._response.close()


HOST_STATS_PREFIX = ".hoststats-"
HOST_STATS_GLOB = f"{HOST_STATS_PREFIX}*.stats"
_installed: dict[int, GuardSettings] = {}
_stats: dict[int, HostStats] = {}  # per process: what its polite opener saw, per host


def install_opener(settings: GuardSettings) -> None:
    """Make ``urllib.request.urlopen`` in this process use the guard and the per-host
    politeness (once per settings)."""
    if _installed.get(os.getpid()) == settings:
        return
    stats = _stats.setdefault(os.getpid(), HostStats())
    urllib.request.install_opener(
        PoliteOpener(build_guarded_opener(settings), settings.politeness, stats))
    _installed[os.getpid()] = settings


def write_host_stats(settings: GuardSettings) -> None:
    """This process's per-host stats into ``settings.stats_dir`` (when set)."""
    if settings.stats_dir and os.getpid() in _stats:
        _stats[os.getpid()].write(Path(settings.stats_dir) / f"{HOST_STATS_PREFIX}{os.getpid()}.stats")


class SniffingResizer:
    """Reads the image header before img2dataset's resizer decodes the image."""

    def __init__(self, inner: Any, max_pixels: int) -> None:
        self.inner = inner
        self.max_pixels = max_pixels

    def __call__(self, img_stream: io.BytesIO, blurring_bbox_list: Any = None) -> tuple:
        def fail(message: str) -> tuple:
            return None, None, None, None, None, message

        img_stream.seek(0)
        head = img_stream.read(16)
        img_stream.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(img_stream) as image:
                    width, height, kind = image.width, image.height, image.format
        except Image.DecompressionBombError as exc:
            return fail(f"{reasons.SNIFF_BOMB}: {exc}")
        except UnidentifiedImageError:
            return fail(f"{reasons.SNIFF_NOT_IMAGE}: body starts with {head!r}")
        except Exception as exc:  # noqa: BLE001 - a broken header is a per-sample failure
            return fail(f"{reasons.SNIFF_TRUNCATED} image header: {exc}")
        if width * height > self.max_pixels:
            return fail(
                f"{reasons.SNIFF_BOMB}: header declares {width}x{height} = {width * height} "
                f"pixels, over the limit {self.max_pixels}"
            )
        img_stream.seek(0)
        out = self.inner(img_stream, blurring_bbox_list)
        if out[-1] == "Image decoding error":
            return fail(
                f"{reasons.SNIFF_TRUNCATED} or corrupt {kind} data ({width}x{height} header)"
            )
        return out


_active: GuardSettings | None = None
_patch_lock = threading.Lock()


class GuardedDownloader(Downloader):
    """img2dataset's Downloader, guarded (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _active is None:
            raise RuntimeError("GuardedDownloader is built by guarded_img2dataset() only")
        self.guard_settings = _active
        if _active.sniff_images:
            self.resizer = SniffingResizer(self.resizer, _active.max_image_pixels)

    def __call__(self, row: Any) -> Any:
        install_opener(self.guard_settings)
        try:
            return super().__call__(row)
        finally:
            write_host_stats(self.guard_settings)


@contextlib.contextmanager
def guarded_img2dataset(settings: GuardSettings) -> Iterator[None]:
    """Within the block, ``img2dataset.download`` uses :class:`GuardedDownloader`.

    One guarded download runs at a time per process. Off the main thread (e.g. inside a
    Prefect worker thread) img2dataset's SIGINT handler is skipped, since only the main
    thread may install signal handlers. OpenCV's pixel limit is set for the workers.
    """
    global _active
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(settings.max_image_pixels))
    replacements: dict[str, Any] = {"Downloader": GuardedDownloader}
    if threading.current_thread() is not threading.main_thread():
        replacements["signal"] = no_signal_handlers()
    with _patch_lock:
        _active = settings
        try:
            with patched_main(**replacements):
                yield
        finally:
            _active = None
