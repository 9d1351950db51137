"""Issue 16: hostile pages and robots.txt on 127.0.0.1 (tests/hostile_site.py).

One hostile page must not end the crawl (each is its own outcome row), robots.txt failures
fail closed, and a connection goes to the address the guard checked (DNS rebinding).
"""

from __future__ import annotations

import socket

import pyarrow.parquet as pq
import pytest

from brivl.crawl import CrawlConfig, read_candidates, run_crawl
from brivl.crawl.crawler import crawl_pages
from brivl.crawl.fetch import Fetcher, decode_html
from brivl.crawl.guard import AddressGuard
from brivl.crawl.robots import ALLOWED, DISALLOWED, ROBOTS_MAX_BYTES, UNAVAILABLE, RobotsCache

LOOPBACK = ("127.0.0.1/32",)
# short timeouts: every stall and trickle on the site outlasts them
CONFIG = CrawlConfig(allow_cidrs=LOOPBACK, timeout_s=0.5, total_timeout_s=1.5, max_depth=1)


def test_hostile_pages_are_outcome_rows_and_the_crawl_goes_on(hostile_site, hostile, tmp_path):
    run_crawl([hostile_site.url("/index.html")], CONFIG, tmp_path)
    pages = {r["url"]: r for r in pq.read_table(tmp_path / "pages.parquet").to_pylist()}
    outcome = {path: pages[hostile_site.url(path)]["outcome"] for path in hostile.HOSTILE_PAGES}
    assert outcome == {
        "/rot13.html": "fetched",  # no text encoding: decoded as its bytes allow (UTF-8)
        "/hex.html": "fetched",
        "/undeclared.html": "fetched",
        "/stall.html": "timeout",  # headers, then nothing
        "/short.html": "truncated",  # 100 of 5,000 declared bytes
    }
    assert pages[hostile_site.url("/rot13.html")]["encoding"] == "utf-8"
    assert pages[hostile_site.url("/undeclared.html")]["encoding"] == "cp1252"
    assert "read timed out" in pages[hostile_site.url("/stall.html")]["detail"].lower()
    captions = {r["image_url"]: r["alt"] for r in read_candidates(tmp_path).to_pylist()}
    assert captions[hostile_site.url("/img/u.png")] == hostile.CAFE  # sniffed, not U+FFFD
    assert captions[hostile_site.url("/img/ok.png")] == "a red square"  # the crawl went on
    assert captions[hostile_site.url("/img/r.png")] == "a rot13 page"


def test_decode_html_sniffs_undeclared_and_bogus_charsets():
    cafe = "<p>Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve \u201cquotes\u201d</p>"
    assert decode_html(cafe.encode("cp1252"), "text/html") == (cafe, "cp1252")
    russian = "<p>\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, \u043a\u0430\u043a \u0434\u0435\u043b\u0430</p>"
    assert decode_html(russian.encode("cp1251"), "text/html") == (russian, "cp1251")
    for bogus in ("rot13", "hex", "base64", "no-such-charset"):
        text, encoding = decode_html(cafe.encode("cp1252"), f"text/html; charset={bogus}")
        assert (text, encoding) == (cafe, "cp1252")
    assert decode_html(cafe.encode(), "text/html; charset=rot13") == (cafe, "utf-8")


def test_a_wrongly_declared_charset_is_sniffed_not_replaced():
    """A page declaring UTF-8 (header or meta) that sends windows-1252 bytes: its captions
    came out with U+FFFD for every accented letter; now they are decoded as sniffed."""
    cafe = "<p>Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve \u201cquotes\u201d</p>"
    body = cafe.encode("cp1252")
    assert decode_html(body, "text/html; charset=utf-8") == (cafe, "cp1252")
    assert decode_html(b"<meta charset='utf-8'>" + body, "text/html")[0].endswith(cafe)
    assert decode_html(cafe.encode(), "text/html; charset=utf-8") == (cafe, "utf-8")
    latin = "<p>Caf\u00e9 cr\u00e8me</p>"  # a declared charset that fits is kept
    assert decode_html(latin.encode("latin-1"), "text/html; charset=iso-8859-1") == (
        latin, "iso8859-1")


def _decisions(site, mode: str, **fetch_kw) -> dict[str, str]:
    site.robots = mode
    fetcher = Fetcher(AddressGuard(LOOPBACK), "brivl-test", **fetch_kw)
    robots = RobotsCache(fetcher.fetch_robots, "brivl")
    return {p: robots.decision(site.url(p)) for p in ("/ok.html", "/private/x", "/late/x")}


def test_huge_robots_txt_is_parsed_up_to_the_limit(hostile_site):
    hostile_site.robots = "huge"
    robots = Fetcher(AddressGuard(LOOPBACK), "t").fetch_robots(hostile_site.url("/robots.txt"))
    assert robots.status == 200 and not robots.error
    assert len(robots.text.encode()) <= ROBOTS_MAX_BYTES and robots.text.endswith("\n")
    # the rules at the top hold; the one after 6 MB is past the limit and is not read
    assert _decisions(hostile_site, "huge") == {
        "/ok.html": ALLOWED,
        "/private/x": DISALLOWED,
        "/late/x": ALLOWED,
    }


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("slow", UNAVAILABLE), ("stall", UNAVAILABLE), ("503", UNAVAILABLE), ("404", ALLOWED)],
)
def test_robots_failures_fail_closed(hostile_site, mode, expected):
    decisions = _decisions(hostile_site, mode, timeout_s=0.5, total_timeout_s=1.0)
    assert set(decisions.values()) == {expected}


def test_crawl_of_a_site_whose_robots_txt_trickles_fetches_nothing(hostile_site):
    hostile_site.robots = "slow"
    out = crawl_pages([hostile_site.url("/ok.html")], CONFIG)
    assert [p["outcome"] for p in out.pages] == ["robots_unavailable"]
    assert hostile_site.paths == ["/robots.txt"] and out.candidates == []


@pytest.fixture
def rebinding(monkeypatch, hostile):
    """``rebind.test`` resolves to 127.0.0.1 the first time, to 127.0.0.2 after that."""
    real, calls = socket.getaddrinfo, []

    def resolve(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        calls.append(port)
        ip = hostile.HOST if len(calls) == 1 else hostile.OTHER_LOOPBACK
        return real(ip, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return calls


def test_fetcher_connects_to_the_address_it_checked(hostile_site, hostile, rebinding):
    url = f"http://rebind.test:{hostile_site.port}/ok.html"
    reply = hostile.http_reply(b"<html>internal</html>", "text/html")
    with hostile.listen(hostile.OTHER_LOOPBACK, hostile_site.port, reply) as internal:
        got = Fetcher(AddressGuard(LOOPBACK), "t", timeout_s=2).fetch(url)
        assert got.ok and b"A fine page" in got.body  # the checked 127.0.0.1
        # no DNS cache: the connection resolves again, gets 127.0.0.2 and refuses it
        got = Fetcher(AddressGuard(LOOPBACK, dns_ttl_s=0), "t", timeout_s=2).fetch(url)
        assert got.error == "ssrf_blocked" and "127.0.0.2" in got.detail
    assert internal.connections == []
