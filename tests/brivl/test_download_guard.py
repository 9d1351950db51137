"""Issue 16: the download guard on 127.0.0.1 (tests/hostile_site.py).

Every hop is http(s) or refused (an ftp: redirect is never followed), IPv6 forms that embed
a private or link-local IPv4 address are refused, a connection goes to the address the
guard checked, and a robots.txt outage is a transient rejection that a rerun retries.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest

from brivl import manifest
from brivl.crawl import CrawlConfig, run_crawl
from brivl.crawl.guard import AddressGuard
from brivl.download import DownloadConfig, reason_of, run_download
from brivl.download.guarded import GuardSettings, install_opener

LOOPBACK = ("127.0.0.1/32",)


@pytest.fixture
def guarded_urlopen():
    """``urllib.request.urlopen`` as img2dataset's workers get it (the installed opener)."""
    saved = urllib.request._opener

    def urlopen(url: str, settings: GuardSettings) -> bytes:
        install_opener(settings)
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()

    yield urlopen
    urllib.request.install_opener(saved)


def _settings(site, host: str = "") -> GuardSettings:
    origin = f"http://{host}:{site.port}" if host else site.origin
    return GuardSettings(allow_cidrs=LOOPBACK, robots={origin: (404, "")}, timeout_s=2.0)


def test_redirect_to_ftp_is_refused_and_never_connected(hostile_site, hostile, guarded_urlopen):
    with hostile.listen(hostile.OTHER_LOOPBACK) as ftp:
        hostile_site.redirect_port = ftp.port
        with pytest.raises(urllib.error.URLError) as info:
            guarded_urlopen(hostile_site.url("/to-ftp"), _settings(hostile_site))
        assert not hostile.wait_for(lambda: ftp.connections, timeout_s=0.5)
    assert reason_of(str(info.value)) == "bad_scheme"
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "data:text/plain,hi"):
        with pytest.raises(urllib.error.URLError) as info:
            guarded_urlopen(url, _settings(hostile_site))
        assert reason_of(str(info.value)) == "bad_scheme"


@pytest.mark.parametrize("path", ["/to-6to4", "/to-nat64"])
def test_redirect_to_embedded_link_local_is_refused(hostile_site, guarded_urlopen, path):
    with pytest.raises(urllib.error.URLError) as info:
        guarded_urlopen(hostile_site.url(path), _settings(hostile_site))
    assert reason_of(str(info.value)) == "ssrf_blocked"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::a9fe:a9fe", False),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("2002:5db8:d822::1", True),  # 6to4 of a public address
        ("2606:4700::1111", True),
    ],
)
def test_ipv6_forms_of_private_addresses_are_refused(address, allowed):
    assert AddressGuard().is_allowed(f"http://[{address}]/") is allowed


def test_urllib_connects_to_the_address_it_checked(
    hostile_site, hostile, guarded_urlopen, monkeypatch
):
    real, calls = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):  # 127.0.0.1 first, then 127.0.0.2
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        calls.append(port)
        ip = hostile.HOST if len(calls) == 1 else hostile.OTHER_LOOPBACK
        return real(ip, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    reply = hostile.http_reply(b"internal")
    with hostile.listen(hostile.OTHER_LOOPBACK, hostile_site.port, reply) as internal:
        url = f"http://rebind.test:{hostile_site.port}/ok.html"
        body = guarded_urlopen(url, _settings(hostile_site, "rebind.test"))
    assert b"A fine page" in body and internal.connections == []
    assert len(calls) == 1  # resolved once: the check's answer is the one connected to


def _crawl_one_page(site, out):
    run_crawl([site.url("/ok.html")], CrawlConfig(allow_cidrs=LOOPBACK, max_depth=0), out)
    return out


DOWNLOAD = DownloadConfig(allow_cidrs=LOOPBACK, processes_count=1, thread_count=2, timeout_s=5)


def _rejected(out) -> dict[str, str]:
    rows = pq.read_table(out / "rejected" / "part-00000.parquet").to_pylist()
    return {r["image_url"]: r["reason"] for r in rows}


def test_robots_outage_is_transient_and_the_rerun_downloads(hostile_site, tmp_path):
    crawl = _crawl_one_page(hostile_site, tmp_path / "crawl")
    image = hostile_site.url("/img/ok.png")
    hostile_site.robots = "503"
    body = run_download(crawl, DOWNLOAD, tmp_path / "download")
    assert _rejected(tmp_path / "download") == {image: "robots_unavailable"}
    assert body["extra"]["transient_rejections"] == {"robots_unavailable": 1}
    assert "/img/ok.png" not in hostile_site.paths
    hostile_site.robots = "ok"  # the site is back: the same download, rerun, fetches it
    body = run_download(crawl, DOWNLOAD, tmp_path / "download")
    assert body["row_counts"]["downloaded"] == 1 and _rejected(tmp_path / "download") == {}
    assert body["extra"]["transient_rejections"] == {}
    assert hostile_site.paths.count("/img/ok.png") == 1
    manifest.verify(tmp_path / "download")
