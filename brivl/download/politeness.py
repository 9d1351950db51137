"""Politeness towards the hosts images come from: caps per host, back-off, per-host stats.

:class:`PoliteOpener` wraps the download's urllib opener (what img2dataset's
``urllib.request.urlopen`` calls) in each worker process:

- at most ``concurrency`` requests to one host at a time, counted from sending the request
  until its body is read or closed, and at most ``rate`` request starts per second per host
  (:class:`HostLimiter`);
- an answer 429 or 503 is retried up to ``retries`` times after the wait its
  ``Retry-After`` asks for (seconds or an HTTP date; ``base_wait_s * 2**attempt`` without
  one), and the whole host waits, not only that request; a wait over ``max_wait_s`` is not
  made and the error stands;
- per host: requests, answers by status, errors, retries, seconds waited, and latency to
  the response headers (:class:`HostStats`), written per process as JSON and merged by the
  stage into its manifest (:func:`merge_stats`).

Caps are per process: the stage divides its per-host caps among img2dataset's processes.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

BACKOFF_STATUSES = (429, 503)
MAX_LATENCIES = 100_000  # per host and process; later ones are not kept for the percentiles


@dataclass(frozen=True)
class Politeness:
    """Per-host limits of one process (picklable: it travels to img2dataset's workers)."""

    concurrency: int = 8  # simultaneous requests per host
    rate: float = 0.0  # request starts per second per host; 0: no cap
    retries: int = 3  # retries of a 429/503 answer
    max_wait_s: float = 30.0  # longest back-off made; a longer Retry-After fails the request
    base_wait_s: float = 1.0  # back-off without Retry-After: base * 2**attempt


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HostLimiter:
    """Concurrency slots and request spacing per host, shared by a process's threads."""

    def __init__(self, concurrency: int, rate: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.concurrency, self.interval = concurrency, (1.0 / rate if rate > 0 else 0.0)
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next: dict[str, float] = {}  # host -> earliest time of its next request start

    def acquire(self, host: str) -> float:
        """Take a slot of ``host`` and wait for its next start time; return seconds waited."""
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self.concurrency))
        started = self.clock()
        slot.acquire()
        while True:
            with self._lock:
                now = self.clock()
                start = self._next.get(host, now)
                if start <= now:
                    self._next[host] = now + self.interval
                    return now - started
            self.sleep(start - now)

    def release(self, host: str) -> None:
        self._slots[host].release()

    def hold_off(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts in the next ``seconds``."""
        with self._lock:
            until = self.clock() + seconds
            self._next[host] = max(self._next.get(host, until), until)


class HostStats:
    """What happened per host in this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hosts: dict[str, dict[str, Any]] = {}

    def _host(self, host: str) -> dict[str, Any]:
        return self.hosts.setdefault(host, {"requests": 0, "status": {}, "errors": {},
                                            "retries": 0, "waited_s": 0.0, "latency_ms": []})

    def answered(self, host: str, status: int, latency_s: float) -> None:
        with self._lock:
            entry = self._host(host)
            entry["requests"] += 1
            entry["status"][str(status)] = entry["status"].get(str(status), 0) + 1
            if len(entry["latency_ms"]) < MAX_LATENCIES:
                entry["latency_ms"].append(round(latency_s * 1000, 1))

    def failed(self, host: str, error: BaseException) -> None:
        with self._lock:
            entry = self._host(host)
            entry["requests"] += 1
            kind = type(error).__name__
            entry["errors"][kind] = entry["errors"].get(kind, 0) + 1

    def waited(self, host: str, seconds: float, retry: bool = False) -> None:
        with self._lock:
            entry = self._host(host)
            entry["waited_s"] += seconds
            entry["retries"] += int(retry)

    def write(self, path: Path) -> None:
        """This process's stats as JSON (atomically replaced)."""
        with self._lock:
            body = json.dumps(self.hosts)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(body)
        tmp.replace(path)


def merge_stats(files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Per-host totals of the processes' stats files, latency as mean/p50/p95/max ms."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        try:
            hosts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a process killed while writing: its last complete file is gone too
        for host, entry in hosts.items():
            out = merged.setdefault(host, {"requests": 0, "status": {}, "errors": {},
                                           "retries": 0, "waited_s": 0.0, "latency_ms": []})
            for key in ("requests", "retries", "waited_s", "latency_ms"):
                out[key] += entry[key]
            for key in ("status", "errors"):
                for name, n in entry[key].items():
                    out[key][name] = out[key].get(name, 0) + n
    for out in merged.values():
        values = np.asarray(out.pop("latency_ms"), dtype=np.float64)
        ok = sum(n for status, n in out["status"].items() if status.startswith("2"))
        out["success_rate"] = round(ok / out["requests"], 4) if out["requests"] else 0.0
        out["waited_s"] = round(out["waited_s"], 3)
        out["latency_ms"] = ({"mean": round(float(values.mean()), 1),
                              "p50": round(float(np.percentile(values, 50)), 1),
                              "p95": round(float(np.percentile(values, 95)), 1),
                              "max": round(float(values.max()), 1)} if len(values) else {})
    return dict(sorted(merged.items()))


class _Releasing:
    """A response that gives its host slot back once, when closed or read to the end."""

    def __init__(self, response: Any, release: Callable[[], None]) -> None:
        self._response, self._release = response, release
        self._done = False

    def _give_back(self) -> None:
        if not self._done:
            self._done = True
            self._release()

    def read(self, *args: Any) -> bytes:
        try:
            data = self._response.read(*args)
        except BaseException:
            self._give_back()
            raise
        if not args or not data:
            self._give_back()  # the whole body (or its end) has been read
        return data

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._give_back()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def __enter__(self) -> _Releasing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoliteOpener:
    """An opener (``open`` like ``OpenerDirector.open``) that is polite to each host."""

    def __init__(self, inner: Any, politeness: Politeness, stats: HostStats | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner, self.politeness = inner, politeness
        self.limiter = HostLimiter(politeness.concurrency, politeness.rate, sleep=sleep)
        self.stats = stats or HostStats()

    def open(self, fullurl: Any, data: Any = None,
             timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT) -> Any:
        url = fullurl.full_url if isinstance(fullurl, urllib.request.Request) else str(fullurl)
        host = (urlsplit(url).hostname or "").lower()
        for attempt in range(self.politeness.retries + 1):
            self.stats.waited(host, self.limiter.acquire(host))
            start = time.monotonic()
            try:
                response = self.inner.open(fullurl, data, timeout)
            except urllib.error.HTTPError as exc:
                self.limiter.release(host)
                self.stats.answered(host, exc.code, time.monotonic() - start)
                wait = self._backoff(exc, attempt)
                if wait is None:
                    raise
                exc.close()
                self.stats.waited(host, 0.0, retry=True)
                self.limiter.hold_off(host, wait)
                continue
            except BaseException as exc:
                self.limiter.release(host)
                self.stats.failed(host, exc)
                raise
            self.stats.answered(host, getattr(response, "status", 200), time.monotonic() - start)
            return _Releasing(response, lambda: self.limiter.release(host))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, exc: urllib.error.HTTPError, attempt: int) -> float | None:
        """Seconds to wait before retrying ``exc``, or None when it is not retried."""
        p = self.politeness
        if exc.code not in BACKOFF_STATUSES or attempt >= p.retries:
            return None
        wait = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None)
        wait = p.base_wait_s * 2 ** attempt if wait is None else wait
        return wait if wait <= p.max_wait_s else None
