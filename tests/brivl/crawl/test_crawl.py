"""The crawler against a hand-written site on 127.0.0.1 (fixture in conftest.py)."""

from __future__ import annotations

import socket
import time

import pyarrow.parquet as pq
import pytest
import urllib3.util.connection

from brivl import manifest
from brivl.crawl import (
    AddressGuard,
    BlockedURL,
    CaptionPolicy,
    CrawlConfig,
    candidate_id,
    crawl_pages,
    read_candidates,
    run_crawl,
)
from brivl.crawl.config import is_boilerplate
from brivl.crawl.fetch import decode_html

LOOPBACK = ("127.0.0.1/32",)


def _crawl(site, **overrides):
    config = CrawlConfig(allow_cidrs=LOOPBACK, **overrides)
    return crawl_pages([site.base_url + "/index.html"], config)


def test_candidates_carry_texts_decisions_and_stable_ids(fixture_site, tmp_path):
    body = run_crawl(
        [fixture_site.base_url + "/index.html"], CrawlConfig(allow_cidrs=LOOPBACK), tmp_path
    )
    rows = {(r["image_url"], r["page_url"]): r for r in read_candidates(tmp_path).to_pylist()}
    base = fixture_site.base_url
    cat = rows[(base + "/img/cat.png", base + "/a.html")]
    assert (cat["alt"], cat["title"], cat["figcaption"]) == (
        "A grey cat on a red sofa",
        "cat",
        "Our office cat",
    )
    assert cat["surrounding"] == "The morning market opened late. Prices of tea went up again."
    # composed (the default): the title "cat" is said by the alt already, so it is left out
    assert (cat["caption"], cat["caption_source"]) == (
        "A grey cat on a red sofa. Our office cat. The morning market opened late. "
        "Prices of tea went up again.",
        "alt+figcaption+surrounding",
    )
    assert cat["candidate_id"] == candidate_id(base + "/img/cat.png", base + "/a.html")
    assert cat["decision"] == "allowed" and cat["robots"] == "allowed" and cat["depth"] == 1
    # a one-letter alt is kept, with the paragraph holding the image appended
    inline = rows[(base + "/img/x.png", base + "/a.html")]
    assert inline["caption_source"] == "alt+surrounding"
    assert inline["caption"] == "x. Short inline text here."
    assert rows[(base + "/private/hidden.png", base + "/a.html")]["decision"] == "robots_disallowed"
    assert rows[("http://10.1.2.3/internal.png", base + "/a.html")]["decision"] == "ssrf_blocked"
    assert rows[(base + "/img/o.png", base + "/optout.html")]["decision"] == "optout_meta"
    # the same <img> twice on one page is one candidate
    assert sum(1 for url, page in rows if url.endswith("/img/cat.png")) == 1
    pages = {r["url"]: r for r in pq.read_table(tmp_path / "pages.parquet").to_pylist()}
    assert pages[base + "/private/secret.html"]["outcome"] == "robots_disallowed"
    assert pages[base + "/hop"]["outcome"] == "robots_disallowed"
    assert "/private/landing.html" in pages[base + "/hop"]["detail"]
    assert pages[base + "/missing.html"]["outcome"] == "http_404"
    assert not any("other.example" in url for url in pages)  # off the allowed domains
    assert body["row_counts"]["candidates"] == len(rows) == 8
    assert manifest.verify(tmp_path)["stage"] == "crawl"


def test_robots_txt_first_and_disallowed_paths_never_requested(fixture_site):
    _crawl(fixture_site, user_agent="brivl-test-agent/1.0")
    paths = fixture_site.paths
    assert paths[0] == "/robots.txt"
    assert paths.count("/robots.txt") == 1  # cached per host
    assert not [p for p in paths if p.startswith("/private/")]
    assert {ua for _m, _p, ua in fixture_site.access_log} == {"brivl-test-agent/1.0"}


def test_page_and_depth_limits(fixture_site):
    out = _crawl(fixture_site, max_depth=0)
    assert [p["url"].rsplit("/", 1)[1] for p in out.pages] == ["index.html"]
    out = _crawl(fixture_site, max_pages=3)
    assert sum(p["outcome"] != "robots_disallowed" for p in out.pages) == 3


def test_charsets_from_header_and_meta(fixture_site):
    captions = {
        c["image_url"].rsplit("/", 1)[1]: c["caption"] for c in _crawl(fixture_site).candidates
    }
    assert captions["c.png"] == "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"  # header: iso-8859-1
    assert captions["d.png"] == "\u201cquoted\u201d na\u00efve"  # <meta charset=windows-1252>


def test_decode_html_order_and_fallback():
    latin = "caf\u00e9".encode("latin-1")
    assert decode_html(latin, "text/html; charset=ISO-8859-1") == ("caf\u00e9", "iso8859-1")
    meta = b"<meta charset='windows-1252'>" + "\u201c".encode("cp1252")
    assert decode_html(meta, "text/html")[0].endswith("\u201c")
    # a header charset wins over a contradicting meta when the bytes fit it, else the meta's
    assert decode_html(meta, "text/html; charset=latin-1")[1] == "iso8859-1"
    assert decode_html(meta, "text/html; charset=utf-8") == (decode_html(meta)[0], "cp1252")
    # an unknown charset counts as undeclared: sniffed, not UTF-8 with replacement characters
    text, encoding = decode_html(b"bad \xff byte", "text/html; charset=bogus-charset")
    assert (text, encoding) == ("bad \u00ff byte", "cp1252")
    assert decode_html(b"\xef\xbb\xbfhi", "text/html; charset=latin-1") == ("hi", "utf-8")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://192.168.1.1/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:10.0.0.1]/",
        "http://100.64.0.1/",
    ],
)
def test_guard_refuses_non_public_addresses(url):
    with pytest.raises(BlockedURL) as info:
        AddressGuard().check(url)
    assert info.value.reason == "ssrf_blocked"


def test_guard_allow_list_and_bad_input():
    guard = AddressGuard(("127.0.0.1/32", "10.0.0.0/8"))
    guard.check("http://127.0.0.1:8000/x")
    guard.check("http://10.9.8.7/x")
    assert not guard.is_allowed("http://127.0.0.2/")
    assert not guard.is_allowed("http://169.254.169.254/")
    assert not AddressGuard().is_allowed("http://localhost/")  # a name for loopback
    assert AddressGuard().is_allowed("http://93.184.216.34/")  # a public address
    with pytest.raises(BlockedURL, match="bad_scheme"):
        guard.check("file:///etc/passwd")
    with pytest.raises(ValueError, match="not a CIDR"):
        AddressGuard(("10.0.0.0/33",))


def test_crawl_refuses_private_seeds_before_connecting(fixture_site, monkeypatch):
    connects: list[tuple] = []
    real = urllib3.util.connection.create_connection

    def spy(address, *args, **kwargs):
        connects.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", spy)
    monkeypatch.setattr(socket, "create_connection", spy)
    seeds = ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/"]
    out = crawl_pages(seeds, CrawlConfig())
    assert [p["outcome"] for p in out.pages] == ["ssrf_blocked", "ssrf_blocked"]
    assert "allow-list" in out.pages[0]["detail"]
    # neither the page nor its robots.txt: no connection to either address at all
    assert connects == []
    # the positive case on loopback (no traffic is ever sent to 10.x / 169.254.x): refused
    # unless allow-listed, fetched when it is
    seed = fixture_site.base_url + "/index.html"
    out = crawl_pages([seed], CrawlConfig())
    assert out.candidates == [] and fixture_site.access_log == []
    out = crawl_pages([seed], CrawlConfig(allow_cidrs=LOOPBACK))
    assert out.candidates and fixture_site.paths[0] == "/robots.txt"
    assert {a[0] for a in connects} == {"127.0.0.1"}


def test_caption_policy_first_mode():
    """mode="first": the rule before composition (one field, the first that qualifies)."""
    first = {"mode": "first"}
    texts = {"alt": "img1", "title": "A title here", "figcaption": "", "surrounding": "x" * 40}
    assert CaptionPolicy(**first).choose(texts) == ("A title here", "title")
    assert CaptionPolicy(**first, priority=("surrounding", "alt")).choose(texts) == (
        "x" * 40, "surrounding")
    assert CaptionPolicy(**first, min_chars=100).choose(texts) == ("x" * 40, "surrounding")
    assert CaptionPolicy(**first, max_chars=5).choose(texts) == ("A tit", "title")
    assert CaptionPolicy(**first).choose(dict.fromkeys(texts, "")) == ("", "")
    with pytest.raises(ValueError, match="accepted"):
        CaptionPolicy(priority=("alt", "nope"))


@pytest.mark.parametrize(
    ("alt", "boilerplate"),
    [("Click to enlarge", True), ("IMG_0042.JPG", True), ("DSC_1234", True),
     ("banner_final_v2.png", True), ("photo", True), ("Picture!", True),
     ("Image of a dog on a beach", False), ("pictures of tea", False), ("A grey cat", False)],
)
def test_boilerplate_alts_fall_through_to_the_next_field(alt: str, boilerplate: bool):
    texts = {"alt": alt, "title": "", "figcaption": "A red kite over the dunes", "surrounding": ""}
    expected = ("A red kite over the dunes", "figcaption") if boilerplate else (alt, "alt")
    assert is_boilerplate(alt) is boilerplate
    first = CaptionPolicy(mode="first")
    assert first.choose(texts) == expected
    assert CaptionPolicy(mode="first", skip_boilerplate=False).choose(texts) == (alt, "alt")
    # nothing better anywhere: the boilerplate is still the caption (the filter judges it)
    assert first.choose({**texts, "figcaption": ""}) == (alt, "alt")
    # composed: a boilerplate alt is left out; a real one leads, the figcaption follows
    composed = CaptionPolicy().choose(texts)
    assert composed == (expected if boilerplate else
                        (f"{alt}. A red kite over the dunes", "alt+figcaption"))
    # ...and nothing but boilerplate is no caption at all (rejected as too short)
    assert CaptionPolicy().choose({**texts, "figcaption": ""}) == (("", "") if boilerplate
                                                                   else (alt, "alt"))


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="max_pagez"):
        CrawlConfig.from_dict({"max_pagez": 3})
    config = CrawlConfig.from_dict({"allow_cidrs": ["127.0.0.1/32"], "caption": {"min_chars": 2}})
    assert config.allow_cidrs == ("127.0.0.1/32",) and config.caption.min_chars == 2


def test_robots_crawl_delay_spaces_requests_to_a_host():
    from brivl.demo import DemoConfig, build_site, serve

    with serve(build_site(DemoConfig(n_images=60, seed=2, crawl_delay=0.3))) as server:
        start = time.monotonic()
        out = crawl_pages(server.seed_urls, CrawlConfig(allow_cidrs=LOOPBACK, max_pages=4))
        elapsed = time.monotonic() - start
    assert sum(p["outcome"] == "fetched" for p in out.pages) == 4
    assert elapsed >= 3 * 0.3  # four page fetches, each start >= 0.3 s after the previous


def test_run_crawl_never_deletes_a_foreign_directory(fixture_site, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        run_crawl([fixture_site.base_url + "/index.html"], CrawlConfig(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
