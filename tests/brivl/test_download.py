"""The download stage: real img2dataset on the demo web (127.0.0.1), every candidate accounted."""

from __future__ import annotations

import io
import socket
import urllib.error
import urllib.request
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import urllib3.util.connection
from img2dataset.resizer import Resizer
from PIL import Image

from brivl import manifest
from brivl.crawl import CrawlConfig, read_candidates, run_crawl
from brivl.demo import DemoConfig, build_site, serve
from brivl.demo.render import bomb_png
from brivl.download import DownloadConfig, reason_of, run_download, shard_files
from brivl.download.guarded import GuardHandler, GuardSettings, SniffingResizer
from brivl.download.stage import INPUT_FILE, claim_out_dir, precheck

LOOPBACK = ("127.0.0.1/32",)
EXPECTED_REASON = {
    "robots": "robots_disallowed",
    "optout_meta": "optout_meta",
    "optout_header": "optout_header",
    "http_404": "http_404",
    "http_500": "http_500",
    "slow": "timeout",
    "not_image": "not_image",
    "truncated": "truncated",
    "bomb": "decompression_bomb",
    "redirect_loop": "redirect_loop",
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Crawl + download the demo web once; the server is gone afterwards."""
    root = tmp_path_factory.mktemp("ingest")
    site = build_site(DemoConfig(n_images=150, seed=0, slow_seconds=2.0))
    with serve(site) as server:
        run_crawl(server.seed_urls, CrawlConfig(allow_cidrs=LOOPBACK), root / "crawl")
        body = run_download(
            root / "crawl",
            DownloadConfig(allow_cidrs=LOOPBACK, timeout_s=1.0, processes_count=1, thread_count=8),
            root / "download",
        )
        log = server.access_log.snapshot()
        base = server.base_url
    truth = {base + im.path: im for im in site.images}
    candidates = read_candidates(root / "crawl").to_pylist()
    shards = pa.concat_tables(
        pq.read_table(p).drop(["jpg"]) for p in shard_files(root / "download")
    )
    rejected = pq.read_table(root / "download" / "rejected" / "part-00000.parquet").to_pylist()
    return {
        "site": site,
        "truth": truth,
        "log": log,
        "candidates": candidates,
        "shards": shards.to_pylist(),
        "rejected": rejected,
        "manifest": body,
        "out": root / "download",
    }


def test_every_candidate_is_downloaded_or_rejected_once(demo_run):
    truth, candidates = demo_run["truth"], demo_run["candidates"]
    expected = {url for url, im in truth.items() if im.fault != "robots_page"}
    assert {c["image_url"] for c in candidates} == expected
    downloaded = [r["candidate_id"] for r in demo_run["shards"] if r["status"] == "success"]
    rejected = [r["candidate_id"] for r in demo_run["rejected"]]
    assert Counter(downloaded + rejected) == Counter(c["candidate_id"] for c in candidates)
    counts = demo_run["manifest"]["row_counts"]
    assert counts["candidates"] == len(candidates) == counts["downloaded"] + counts["rejected"]
    assert counts["downloaded"] == len(downloaded)


@pytest.mark.parametrize("fault", sorted(EXPECTED_REASON))
def test_each_fault_kind_is_rejected_with_its_reason(demo_run, fault):
    truth = demo_run["truth"]
    reasons = [r["reason"] for r in demo_run["rejected"] if truth[r["image_url"]].fault == fault]
    assert reasons and set(reasons) == {EXPECTED_REASON[fault]}
    assert len(reasons) == demo_run["site"].fault_counts()[fault]


def test_clean_and_filter_level_images_are_downloaded(demo_run):
    truth = demo_run["truth"]
    failed = {truth[r["image_url"]].fault for r in demo_run["rejected"]}
    assert failed == set(EXPECTED_REASON)  # nothing else failed
    ok = [r for r in demo_run["shards"] if r["status"] == "success"]
    assert {truth[r["url"]].fault for r in ok} == {
        None,
        "tiny",
        "aspect",
        "duplicate",
        "near_duplicate",
        "empty_text",
        "overlong_text",
        "spam_text",
        "blocklisted_text",
        "non_utf8",
    }
    assert all(r["caption"] is not None and r["page_url"] for r in ok)


def test_disallowed_paths_never_requested(demo_run):
    paths = [r.path for r in demo_run["log"]]
    assert paths and not [p for p in paths if p.startswith(("/private/", "/img/private/"))]
    assert all("brivl" in r.user_agent for r in demo_run["log"])


def test_manifest_carries_img2dataset_stats(demo_run):
    body = manifest.verify(demo_run["out"])
    totals = body["extra"]["img2dataset"]["totals"]
    assert totals["count"] == body["row_counts"]["attempted"]
    assert totals["successes"] == body["row_counts"]["downloaded"]
    assert body["row_counts"]["rejected:timeout"] == demo_run["site"].fault_counts()["slow"]
    assert sorted(body["files"]) == [
        "00000.parquet",
        "00000_stats.json",
        "rejected/part-00000.parquet",
    ]
    assert not (demo_run["out"] / INPUT_FILE).exists() and not (demo_run["out"] / "_tmp").exists()
    (host,) = body["extra"]["hosts"].values()  # per-host stats of the image requests
    # img2dataset's logger reads every *.json in its output folder as "<shard>_stats.json":
    # the per-host stats files must not be among them (one was, and crashed that logger)
    names = {f.name for f in demo_run["out"].glob("*.json")} - {manifest.MANIFEST_NAME}
    assert names and all(name.split("_")[0].isdigit() for name in names), names
    faults = demo_run["site"].fault_counts()
    assert host["requests"] >= body["row_counts"]["attempted"]
    assert host["status"]["404"] == faults["http_404"] and host["status"]["500"] == faults["http_500"]
    assert host["status"]["200"] >= totals["successes"] and host["retries"] == 0
    assert 0 < host["success_rate"] < 1 and host["latency_ms"]["p95"] >= host["latency_ms"]["p50"]


def test_reason_of_messages():
    cases = {
        "HTTP Error 404: Not Found": "http_404",
        "HTTP Error 503: Service Unavailable": "http_503",
        "HTTP Error 302: The HTTP server returned a redirect error that would lead to an "
        "infinite loop.\nThe last 30x error message was:\nFound": "redirect_loop",
        "Use of image disallowed by X-Robots-Tag directive": "optout_header",
        "The read operation timed out": "timeout",
        "<urlopen error timed out>": "timeout",
        "OpenCV(4.11.0) error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS": (
            "decompression_bomb"
        ),
        "<urlopen error brivl-guard:ssrf_blocked: 10.0.0.1 ...>": "ssrf_blocked",
        "<urlopen error brivl-guard:robots_disallowed: http://x/private/a.jpg>": "robots_disallowed",
        "IncompleteRead(10 bytes read, 90 more expected)": "truncated",
        "image too small": "image_too_small",
        "something odd happened": "other:something odd happened",
    }
    assert {m: reason_of(m) for m in cases} == cases


def _jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def test_sniffer_tells_not_image_truncated_and_bomb_apart():
    resizer = SniffingResizer(
        Resizer(image_size=32, resize_mode="keep_ratio", resize_only_if_bigger=False), 89_478_485
    )
    good = _jpeg()

    def error(data: bytes) -> str | None:
        return resizer(io.BytesIO(data))[-1]

    assert error(good) is None
    assert reason_of(error(b"<!DOCTYPE html><html>nope</html>")) == "not_image"
    assert reason_of(error(good[: len(good) // 2])) == "truncated"
    assert reason_of(error(bomb_png(20000))) == "decompression_bomb"
    small_limit = SniffingResizer(
        Resizer(image_size=32, resize_mode="no", resize_only_if_bigger=False), 1000
    )
    assert reason_of(small_limit(io.BytesIO(good))[-1]) == "decompression_bomb"  # 64*48 > 1000


def _candidates(rows):
    cols = ["candidate_id", "image_url", "page_url", "caption", "decision"]
    return pa.Table.from_pylist([dict(zip(cols, r, strict=True)) for r in rows])


def test_precheck_refuses_private_and_link_local_before_connecting(monkeypatch):
    connects: list = []
    monkeypatch.setattr(
        urllib3.util.connection, "create_connection", lambda *a, **k: connects.append(a)
    )
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a))
    table = _candidates(
        [
            ("a", "http://10.0.0.7/a.jpg", "http://p/", "cap", "allowed"),
            ("b", "http://169.254.169.254/b.jpg", "http://p/", "cap", "allowed"),
            ("c", "http://127.0.0.1:9/c.jpg", "http://p/", "cap", "allowed"),
            ("d", "http://127.0.0.1:9/d.jpg", "http://p/", "cap", "optout_meta"),
        ]
    )
    config = DownloadConfig(recheck_robots=False)
    keep, rejected, _ = precheck(table, config)
    assert keep.num_rows == 0
    assert {r["candidate_id"]: r["reason"] for r in rejected} == {
        "a": "ssrf_blocked",
        "b": "ssrf_blocked",
        "c": "ssrf_blocked",
        "d": "optout_meta",
    }
    keep, rejected, _ = precheck(table, DownloadConfig(recheck_robots=False, allow_cidrs=LOOPBACK))
    assert keep["candidate_id"].to_pylist() == ["c"]
    assert connects == []


def test_guard_handler_checks_every_request_and_redirect_hop():
    site = build_site(DemoConfig(n_images=60, seed=3))
    loop = next(im for im in site.images if im.fault == "redirect_loop")
    with serve(site) as server:
        robots = {server.base_url: (200, f"User-agent: *\nDisallow: {loop.path[:-4]}-loop\n")}
        settings = GuardSettings(allow_cidrs=LOOPBACK, robots=robots)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), GuardHandler(settings)
        )
        with pytest.raises(urllib.error.URLError) as info:
            opener.open(server.url(loop.path), timeout=5)
        assert reason_of(str(info.value)) == "robots_disallowed"  # the redirect target
        with pytest.raises(urllib.error.URLError) as info:
            opener.open("http://10.0.0.1/x.jpg", timeout=5)
        assert reason_of(str(info.value)) == "ssrf_blocked"
        paths = server.access_log.paths()
    assert paths == [loop.path]  # the first hop only; the disallowed hop was never sent


def test_out_dir_is_resumed_only_for_the_same_candidates_and_config(tmp_path):
    candidates = tmp_path / "candidates"
    candidates.mkdir()
    (candidates / "part.txt").write_text("x")
    manifest.write_manifest(
        candidates, stage="crawl", config={}, inputs=[], code_version="t", row_counts={}
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "00000.parquet").write_text("someone else's shard")
    with pytest.raises(FileExistsError, match="not empty"):
        claim_out_dir(foreign, candidates, DownloadConfig())
    out = tmp_path / "out"
    claim_out_dir(out, candidates, DownloadConfig())
    (out / "00000.parquet").write_text("a partial shard of a killed run")
    claim_out_dir(out, candidates, DownloadConfig())  # same identity: resumed
    with pytest.raises(FileExistsError):
        claim_out_dir(out, candidates, DownloadConfig(image_size=64))
