"""Issue 16: a robots.txt outage during download is no cache hit: the rerun fetches (real
Prefect, real img2dataset, the hostile site on 127.0.0.1)."""

from __future__ import annotations

from brivl import manifest
from brivl.crawl import CrawlConfig, run_crawl
from tasks.download import download_task

LOOPBACK = ("127.0.0.1/32",)
CONFIG = {"allow_cidrs": list(LOOPBACK), "processes_count": 1, "thread_count": 2, "timeout_s": 5}


def test_download_after_a_robots_outage_is_rerun_not_cached(hostile_site, tmp_path):
    crawl = tmp_path / "crawl"
    run_crawl([hostile_site.url("/ok.html")], CrawlConfig(allow_cidrs=LOOPBACK, max_depth=0), crawl)
    hostile_site.robots = "503"
    first = download_task(str(crawl), CONFIG, return_state=True)
    counts = manifest.read_manifest(first.result())["row_counts"]
    assert counts["rejected:robots_unavailable"] == 1 and counts["downloaded"] == 0
    hostile_site.robots = "ok"  # the site is back
    second = download_task(str(crawl), CONFIG, return_state=True)
    assert second.name == "Completed" and second.result() == first.result()
    assert manifest.read_manifest(second.result())["row_counts"]["downloaded"] == 1
    assert hostile_site.paths.count("/img/ok.png") == 1
    assert download_task(str(crawl), CONFIG, return_state=True).name == "Cached"
