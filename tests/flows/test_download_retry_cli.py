"""`brivl download --retry-transient`: a rerun retries only the transient failures (500, 429)
and keeps every earlier success and final failure (404, robots). Through the CLI, the
download task and brivl.download.retry: real Prefect and img2dataset, the hostile site on
127.0.0.1, its request log counting what was fetched."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from brivl import manifest
from brivl.crawl import CrawlConfig, run_crawl
from brivl.download import shard_files

LOOPBACK = ("127.0.0.1/32",)
# no in-run back-off: a 429 stays a failure of this run, for the rerun to retry
CONFIG = {"backoff_retries": 0, "processes_count": 1, "thread_count": 2, "timeout_s": 5}


def _rows(out) -> dict[str, dict]:
    (path,) = shard_files(out)
    return {r["url"].split(":", 2)[2].split("/", 1)[1]: r for r in pq.read_table(path).to_pylist()}


def test_cli_retry_transient_fetches_only_the_passing_failures(hostile_site, tmp_path, capsys):
    from flows.cli import main

    crawl, out = tmp_path / "crawl", tmp_path / "download"
    run_crawl([hostile_site.url("/mixed.html")], CrawlConfig(allow_cidrs=LOOPBACK, max_depth=0),
              crawl)
    config = tmp_path / "download.json"
    config.write_text(json.dumps(CONFIG))
    argv = ["download", "--input", str(crawl), "--out", str(out), "--allow-cidr", LOOPBACK[0],
            "--config", str(config)]
    assert main(argv) == 0
    first = manifest.read_manifest(out)
    counts = first["row_counts"]
    assert counts["downloaded"] == 2 and counts["rejected:robots_disallowed"] == 1
    assert (counts["rejected:http_500"], counts["rejected:http_429"],
            counts["rejected:http_404"]) == (1, 1, 1)
    before, fetched = _rows(out), len(hostile_site.paths)
    capsys.readouterr()

    assert main([*argv, "--retry-transient"]) == 0  # the download is cached, then the retry
    printed = capsys.readouterr().out
    assert "retried 2 transient failures: 2 downloaded now" in printed
    assert printed.strip().splitlines()[-1] == str(out)
    new = [p for p in hostile_site.paths[fetched:] if p != "/robots.txt"]
    assert sorted(new) == ["/flaky/429/m4.png", "/flaky/500/m3.png"]  # only those, once each
    body = manifest.verify(out)
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
    assert not (out / ".retry").exists()

    seen = len(hostile_site.paths)
    assert main([*argv, "--retry-transient"]) == 0  # nothing left worth retrying
    assert "retried 0 transient failures" in capsys.readouterr().out
    assert hostile_site.paths[seen:] == []  # not even robots.txt: no row to retry
