"""SSRF guard: which network addresses a fetch may connect to.

Only ``http`` and ``https`` URLs pass. Private, loopback, link-local, multicast, reserved
and other non-global addresses are refused unless an allow-listed CIDR covers them, and so
are IPv6 addresses that embed such an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002::/16``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, Teredo ``2001::/32``). Every
host is resolved and *every* address it resolves to must pass, so a name cannot smuggle in an
internal address next to a public one. The check runs before any request and on every
redirect hop.

DNS rebinding: a name checked once and resolved again by the HTTP client at connect time
could answer with another address the second time. The clients therefore never resolve
names themselves: their connection classes call :meth:`AddressGuard.open_connection`, which
resolves the host (from the same cache as the check), checks each address and connects to
that checked address literally. The address a socket connects to is always one that passed
the guard, whatever the DNS server answers in between (see ``brivl.crawl.fetch`` for
requests/urllib3 and ``brivl.download.guarded`` for urllib/http.client).

Port forwards (:mod:`brivl.crawl.forward`): a guard connects to a checked loopback address
at its registered live port instead of the URL's port, so the demo web keeps one canonical
origin (and stage identity) whichever port it listens on. The address is never changed.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from brivl.crawl.forward import PortForward, active_forwards, live_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOWED_SCHEMES = ("http", "https")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class BlockedURL(Exception):
    """A URL the guard refuses to fetch; ``reason`` is a short machine-readable code."""

    def __init__(self, url: str, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {url}: {detail}")
        self.url = url
        self.reason = reason
        self.detail = detail


def parse_cidrs(cidrs: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse allow-listed networks; a bad entry raises naming it and the accepted form."""
    out = []
    for text in cidrs:
        try:
            out.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(
                f"allow-listed network {text!r} is not a CIDR (accepted: '127.0.0.1/32', "
                f"'10.0.0.0/8', '::1/128'): {exc}"
            ) from exc
    return tuple(out)


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4, NAT64, Teredo), else ``[]``."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    if ip in _SIXTOFOUR:
        return [ip.sixtofour]
    if any(ip in net for net in _NAT64):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.teredo:
        return list(ip.teredo)
    return []


def is_public(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback
    )


@dataclass
class AddressGuard:
    """Decides whether a URL's host may be contacted. Thread-safe; caches DNS answers.

    ``forwards``: this process's port forwards when the guard is built, unless given."""

    allow_cidrs: tuple[str, ...] = ()
    dns_ttl_s: float = 300.0
    forwards: tuple[PortForward, ...] = field(default_factory=active_forwards)
    _networks: tuple = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._networks = parse_cidrs(self.allow_cidrs)

    def allowed_address(self, ip: IPAddress) -> bool:
        """Public, or inside an allow-listed network; an embedded IPv4 address must pass too."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not all(self.allowed_address(v4) for v4 in embedded_ipv4(ip)):
            return False
        return is_public(ip) or any(ip in net for net in self._networks)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to (IP literals are not looked up)."""
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((host, port))
        if hit and now - hit[0] < self.dns_ttl_s:
            return hit[1]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addrs = sorted({ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}, key=str)
        with self._lock:
            self._cache[(host, port)] = (now, addrs)
        return addrs

    def check(self, url: str) -> None:
        """Raise :class:`BlockedURL` unless ``url`` is http(s) to allowed addresses only."""
        parts = urlsplit(url)
        if parts.scheme not in ALLOWED_SCHEMES:
            raise BlockedURL(url, "bad_scheme", f"scheme {parts.scheme!r}; accepted: http, https")
        host = parts.hostname
        if not host:
            raise BlockedURL(url, "bad_url", "no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise BlockedURL(url, "bad_url", str(exc)) from exc
        self.addresses(host, port, url)

    def addresses(self, host: str, port: int, url: str = "") -> list[IPAddress]:
        """``host``'s addresses, all checked; :class:`BlockedURL` if any is refused."""
        url = url or f"{host}:{port}"
        try:
            addrs = self.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise BlockedURL(url, "dns_error", str(exc)) from exc
        refused = [str(a) for a in addrs if not self.allowed_address(a)]
        if refused or not addrs:
            raise BlockedURL(
                url,
                "ssrf_blocked",
                f"{host} resolves to non-public address(es) {refused or '(none)'} not covered "
                f"by the allow-list {list(self.allow_cidrs)}",
            )
        return addrs

    def open_connection(
        self, host: str, port: int, connect: Callable[[tuple[str, int]], socket.socket]
    ) -> socket.socket:
        """A socket to ``host``: ``connect((ip, port))`` on each checked address in turn.

        The HTTP clients' connection classes call this instead of resolving ``host``
        themselves, so the address connected to is the one that was checked (the pin); a
        forwarded (address, port) is connected to at its live port.
        """
        error: OSError | None = None
        for ip in self.addresses(host, port):
            try:
                return connect((str(ip), live_port(self.forwards, str(ip), port)))
            except OSError as exc:
                error = exc
        assert error is not None  # addresses() never returns an empty list
        raise error

    def is_allowed(self, url: str) -> bool:
        """:meth:`check` as a boolean."""
        try:
            self.check(url)
        except BlockedURL:
            return False
        return True
