"""Port forwards: a canonical loopback origin that this process serves from another port.

A stage's identity and its rows hold URLs. The demo web is therefore always named by one
canonical origin (``http://127.0.0.1:8731``), in its seeds, in every candidate and download
row and so in every stage key. When that port is taken, the demo listens on a free port and
registers a :class:`PortForward`: the guarded clients (crawler, download workers) then open
their TCP connections for the canonical (address, port) to the live port. Nothing else
differs - the URL, the Host header, the SSRF check (of the canonical address) and the address
connected to (that same checked address) - so a run on another port has the same keys and
writes the same rows, and a download killed on one port resumes on another.

Only loopback addresses can be forwarded (a forward cannot send a connection anywhere the
guard did not check), and only from inside this process: :func:`forwarding` registers one
for the life of a ``with`` block, and a guard built while it is active copies it
(:func:`active_forwards`). Processes that do not share this memory (img2dataset's workers)
get the forwards passed explicitly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_registry: dict[tuple[str, int], list[int]] = {}  # (ip, port) -> [live port, users]
_lock = threading.Lock()


@dataclass(frozen=True)
class PortForward:
    """Connections to ``host:port`` (the canonical origin) go to ``host:live_port``."""

    host: str  # a loopback IP literal, e.g. 127.0.0.1 or ::1
    port: int  # the canonical port, the one in every URL
    live_port: int  # where the server listens now

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise ValueError(f"port forward host {self.host!r}: accepted: a loopback IP "
                             "literal such as 127.0.0.1 or ::1") from exc
        if not ip.is_loopback:
            raise ValueError(f"port forward host {self.host!r} is not loopback; only "
                             "loopback addresses can be forwarded")
        for name in ("port", "live_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 < value < 65536:
                raise ValueError(f"port forward {name}: {value!r}; accepted: 1..65535")

    @property
    def key(self) -> tuple[str, int]:
        return str(ipaddress.ip_address(self.host)), self.port


def live_port(forwards: Iterable[PortForward], ip: str, port: int) -> int:
    """The port to connect to for the checked address ``ip`` and the URL's ``port``."""
    forwards = tuple(forwards)
    if not forwards:
        return port
    key = (str(ipaddress.ip_address(ip)), port)
    for forward in forwards:
        if forward.key == key:
            return forward.live_port
    return port


def active_forwards() -> tuple[PortForward, ...]:
    """The forwards registered in this process now (a guard copies them when built)."""
    with _lock:
        return tuple(PortForward(h, p, live) for (h, p), (live, _) in sorted(_registry.items()))


@contextlib.contextmanager
def forwarding(forward: PortForward) -> Iterator[PortForward]:
    """Register ``forward`` for the block (an identity forward registers nothing). One
    canonical origin has one live port: a second, different forward for it is refused."""
    if forward.port == forward.live_port:
        yield forward
        return
    with _lock:
        entry = _registry.setdefault(forward.key, [forward.live_port, 0])
        if entry[0] != forward.live_port:
            raise RuntimeError(f"{forward.host}:{forward.port} is already forwarded to port "
                               f"{entry[0]} in this process")
        entry[1] += 1
    try:
        yield forward
    finally:
        with _lock:
            entry[1] -= 1
            if not entry[1]:
                del _registry[forward.key]
