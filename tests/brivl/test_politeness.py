"""Politeness in download: a loopback host that answers bursts with 429 + Retry-After.

Its request log shows the per-host concurrency cap held, every 429 was retried no sooner
than its Retry-After, a rate cap spaces request starts, and the per-host stats add up.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from brivl.download.guarded import GuardSettings, build_guarded_opener
from brivl.download.politeness import (
    HostStats,
    Politeness,
    PoliteOpener,
    merge_stats,
    retry_after_s,
)

BODY = b"\xff\xd8\xff" + b"x" * 2000


class BurstyHost(ThreadingHTTPServer):
    """Serves BODY after ``delay_s``; a request arriving when ``window`` requests already
    came in the last second gets 429 with ``Retry-After: 1``. Logs (time, path, status)."""

    daemon_threads = True

    def __init__(self, window: int, delay_s: float = 0.05) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.window, self.delay_s = window, delay_s
        self.lock = threading.Lock()
        self.log: list[tuple[float, str, int]] = []
        self.in_flight = self.max_in_flight = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: BurstyHost

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        host, now = self.server, time.monotonic()
        with host.lock:
            recent = [t for t, _, status in host.log if now - t < 1.0 and status == 200]
            status = 429 if host.window and len(recent) >= host.window else 200
            host.log.append((now, self.path, status))
            host.in_flight += 1
            host.max_in_flight = max(host.max_in_flight, host.in_flight)
        try:
            if status == 429:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            time.sleep(host.delay_s)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        finally:
            with host.lock:
                host.in_flight -= 1

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def host(request):
    server = BurstyHost(*request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def opener(host: BurstyHost, politeness: Politeness) -> PoliteOpener:
    settings = GuardSettings(allow_cidrs=("127.0.0.1/32",), timeout_s=5.0,
                             robots={host.origin: (200, "User-agent: *\nAllow: /\n")})
    return PoliteOpener(build_guarded_opener(settings), politeness, HostStats())


def fetch_all(polite: PoliteOpener, urls: list[str]) -> list[bytes]:
    def get(url: str) -> bytes:
        with polite.open(url, timeout=5.0) as response:
            return response.read()

    with ThreadPoolExecutor(8) as pool:  # more threads than the cap, like img2dataset's
        return list(pool.map(get, urls))


@pytest.mark.parametrize("host", [(4,)], indirect=True)
def test_bursts_get_429_and_each_retry_waits_its_retry_after(host: BurstyHost) -> None:
    polite = opener(host, Politeness(concurrency=2, retries=5, max_wait_s=5.0))
    urls = [f"{host.origin}/img/{i}.jpg" for i in range(10)]
    assert fetch_all(polite, urls) == [BODY] * 10  # every image arrives in the end
    assert host.max_in_flight <= 2  # the per-host cap held
    refused = [(t, path) for t, path, status in host.log if status == 429]
    assert refused, "the burst was never refused: the back-off is untested"
    for when, path in refused:  # the next try of that image came after its Retry-After
        later = [t for t, p, _ in host.log if p == path and t > when]
        assert later and later[0] - when >= 0.95, (path, later)
    (stats,) = merge_stats_of(polite).values()
    assert stats["status"] == {"200": 10, "429": len(refused)}
    assert stats["retries"] == len(refused) and stats["waited_s"] >= 0.95
    assert stats["requests"] == len(host.log) and stats["success_rate"] < 1.0
    assert set(stats["latency_ms"]) == {"mean", "p50", "p95", "max"}


@pytest.mark.parametrize("host", [(0,)], indirect=True)
def test_a_rate_cap_spaces_request_starts(host: BurstyHost) -> None:
    polite = opener(host, Politeness(concurrency=4, rate=5.0))
    fetch_all(polite, [f"{host.origin}/r/{i}.jpg" for i in range(6)])
    starts = sorted(t for t, _, _ in host.log)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 6 and min(gaps) >= 0.17  # 5 a second: 0.2 s apart, less jitter


@pytest.mark.parametrize("host", [(1,)], indirect=True)
def test_a_retry_after_over_the_limit_is_not_waited_for(host: BurstyHost) -> None:
    polite = opener(host, Politeness(concurrency=1, retries=3, max_wait_s=0.5))
    fetch_all(polite, [f"{host.origin}/a.jpg"])
    start = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as raised:
        polite.open(f"{host.origin}/b.jpg").read()
    assert raised.value.code == 429 and time.monotonic() - start < 0.5
    assert retry_after_s("120") == 120.0 and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0


def merge_stats_of(polite: PoliteOpener) -> dict:
    """The opener's stats as the stage merges them (through the per-process JSON file)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ".hoststats-1.json"
        polite.stats.write(path)
        return merge_stats([path])
