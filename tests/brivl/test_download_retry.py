"""A download rerun retries only the transient failures (500, 429) and keeps every earlier
success and final failure (404, robots): real img2dataset, the hostile site on 127.0.0.1,
its request log counting what was fetched."""

from __future__ import annotations

import pyarrow.parquet as pq

from brivl import manifest
from brivl.crawl import CrawlConfig, run_crawl
from brivl.download import DownloadConfig, run_download, shard_files
from brivl.download.reasons import retryable
from brivl.download.retry import retry_transient

LOOPBACK = ("127.0.0.1/32",)
# no in-run back-off: a 429 stays a failure of this run, for the rerun to retry
CONFIG = DownloadConfig(allow_cidrs=LOOPBACK, processes_count=1, thread_count=2, timeout_s=5,
                        backoff_retries=0)


def _rows(out) -> dict[str, tuple]:
    table = pq.read_table(shard_files(out)[0]) if len(shard_files(out)) == 1 else None
    assert table is not None
    return {r["url"].split(":", 2)[2].split("/", 1)[1]: r for r in table.to_pylist()}


def test_retryable_reasons() -> None:
    assert all(map(retryable, ("timeout", "connection_error", "http_429", "http_500", "http_503")))
    assert not any(map(retryable, ("http_404", "robots_disallowed", "optout_header",
                                   "not_image", "http_5", "missing_from_output")))


def test_a_rerun_retries_only_the_transient_failures(hostile_site, tmp_path) -> None:
    crawl, out = tmp_path / "crawl", tmp_path / "download"
    run_crawl([hostile_site.url("/mixed.html")],
              CrawlConfig(allow_cidrs=LOOPBACK, max_depth=0), crawl)
    first = run_download(crawl, CONFIG, out)
    counts = first["row_counts"]
    assert counts["downloaded"] == 2 and counts["rejected:robots_disallowed"] == 1
    assert (counts["rejected:http_500"], counts["rejected:http_429"],
            counts["rejected:http_404"]) == (1, 1, 1)
    before = _rows(out)
    fetched = list(hostile_site.paths)

    body = retry_transient(out, crawl, CONFIG)
    new = [p for p in hostile_site.paths[len(fetched):] if p != "/robots.txt"]
    seen = len(hostile_site.paths)
    assert sorted(new) == ["/flaky/429/m4.png", "/flaky/500/m3.png"]  # only those, once each
    assert body["row_counts"]["downloaded"] == 4 and body["row_counts"]["rejected"] == 2
    assert body["row_counts"]["candidates"] == counts["candidates"]
    assert "rejected:http_500" not in body["row_counts"]
    assert body["extra"]["retried"]["supersedes"] == first["hash"]
    assert body["extra"]["retried"]["recovered"] == 2
    after = _rows(out)
    for path in ("img/m1.png", "img/m2.png", "gone/m5.jpg"):  # earlier outcomes kept as were
        assert after[path] == before[path]
    assert after["flaky/500/m3.png"]["status"] == "success"
    assert after["flaky/500/m3.png"]["key"] == before["flaky/500/m3.png"]["key"]
    manifest.verify(out)
    assert not (out / ".retry").exists()

    assert retry_transient(out, crawl, CONFIG) is None  # nothing left worth retrying
    assert hostile_site.paths[seen:] == []  # not even robots.txt: no row to retry
