"""WARC input: a WARC written here with warcio reads back into the same candidates."""

from __future__ import annotations

import io

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from brivl.crawl import CrawlConfig, read_candidates, run_crawl

PAGE = """<html><head><meta charset="windows-1252"></head><body>
<p>Harbour news of the week.</p>
<figure><img src="/img/boat.jpg" alt="A blue boat \u2014 na\u00efve art"><figcaption>Boats</figcaption></figure>
<img src="/private/p.jpg" alt="members only picture">
<img src="https://cdn.example.org/c.jpg" alt="picture on a CDN host">
</body></html>"""
OPTOUT = "<html><head><meta name='robots' content='noai'></head><body><img src='/o.jpg' alt='opted out'></body></html>"


def _record(writer: WARCWriter, url: str, body: bytes, ctype: str, status: str = "200 OK"):
    headers = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
    record = writer.create_warc_record(
        url, "response", payload=io.BytesIO(body), http_headers=headers
    )
    writer.write_record(record)


@pytest.fixture
def warc_file(tmp_path):
    path = tmp_path / "pages.warc.gz"
    with open(path, "wb") as stream:
        writer = WARCWriter(stream, gzip=True)
        _record(
            writer,
            "http://news.example.com/robots.txt",
            b"User-agent: *\nDisallow: /private/\n",
            "text/plain",
        )
        _record(writer, "http://news.example.com/a.html", PAGE.encode("cp1252"), "text/html")
        _record(
            writer, "http://news.example.com/o.html", OPTOUT.encode(), "text/html; charset=utf-8"
        )
        _record(writer, "http://news.example.com/logo.png", b"\x89PNG...", "image/png")
        _record(writer, "http://news.example.com/gone.html", b"gone", "text/html", "404 Not Found")
    return path


def test_warc_pages_become_candidates(warc_file, tmp_path):
    config = CrawlConfig(warc_robots="allow", check_image_hosts=False)
    body = run_crawl([], config, tmp_path / "out", warc_files=[warc_file])
    rows = {r["image_url"]: r for r in read_candidates(tmp_path / "out").to_pylist()}
    boat = rows["http://news.example.com/img/boat.jpg"]
    assert boat["alt"] == "A blue boat \u2014 na\u00efve art"  # cp1252 via <meta charset>
    assert boat["caption"] == "A blue boat \u2014 na\u00efve art. Boats. Harbour news of the week."
    assert (boat["figcaption"], boat["surrounding"]) == ("Boats", "Harbour news of the week.")
    assert boat["page_url"] == "http://news.example.com/a.html" and boat["decision"] == "allowed"
    # the robots.txt captured in the WARC applies to its host
    assert rows["http://news.example.com/private/p.jpg"]["decision"] == "robots_disallowed"
    # a host with no robots.txt in the WARC follows warc_robots ("allow" here)
    assert rows["https://cdn.example.org/c.jpg"]["decision"] == "allowed"
    assert rows["http://news.example.com/o.jpg"]["decision"] == "optout_meta"
    assert body["extra"]["pages_by_outcome"] == {"fetched": 2, "not_html": 1, "http_404": 1}


def test_warc_hosts_without_robots_can_be_disallowed(warc_file, tmp_path):
    out = run_crawl(
        [],
        CrawlConfig(warc_robots="disallow", check_image_hosts=False),
        tmp_path / "out",
        warc_files=[warc_file],
    )
    rows = {r["image_url"]: r for r in read_candidates(tmp_path / "out").to_pylist()}
    assert rows["https://cdn.example.org/c.jpg"]["decision"] == "robots_disallowed"
    assert rows["http://news.example.com/img/boat.jpg"]["decision"] == "allowed"
    assert out["row_counts"]["candidates"] == 4


def test_missing_warc_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.warc"):
        run_crawl([], CrawlConfig(), tmp_path / "out", warc_files=[tmp_path / "nope.warc"])
