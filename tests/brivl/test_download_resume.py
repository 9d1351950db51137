"""Issue 3: SIGKILL during the download, rerun, and the rows equal an uninterrupted run's.

Real img2dataset against the demo web on 127.0.0.1: one download runs to the end (A); a
second one (B) runs in a subprocess whose whole process group (img2dataset's spawned
workers included) is SIGKILLed after a shard finished but before the manifest; then
``run_download`` is rerun on B and its rows are compared with A's.

Issue 16 item 7: the rerun finds the demo's port taken by another server, so the demo
listens elsewhere behind a port forward (``serve_at``): the same candidates, the same
directory, the same rows, and not one request to the port's new holder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brivl import manifest
from brivl.crawl import CrawlConfig, run_crawl
from brivl.demo import DemoConfig, build_site, serve, serve_at
from brivl.download import DownloadConfig, run_download, shard_files
from brivl.download.stage import REJECTED_DIR

pytestmark = pytest.mark.slow  # three real img2dataset runs and a subprocess

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.1/32",)
# one process and small shards: several shards, finishing one after another; the timeout
# is far from both a normal response (a busy machine) and the slow images' stall
CONFIG = DownloadConfig(
    allow_cidrs=LOOPBACK,
    timeout_s=3.0,
    processes_count=1,
    thread_count=4,
    number_sample_per_shard=15,
    image_size=64,
)
CHILD = """
import json, sys
from brivl.download import DownloadConfig, run_download
config = DownloadConfig.from_dict(json.loads(sys.argv[3]))
run_download(sys.argv[1], config, sys.argv[2])
"""


def _rows(out: Path) -> dict:
    """Success rows of the img2dataset shards, rejected reasons, and the manifest."""
    shards = pa.concat_tables(
        pq.read_table(p, columns=["candidate_id", "status", "url"]) for p in shard_files(out)
    ).to_pylist()
    success = [r["candidate_id"] for r in shards if r["status"] == "success"]
    urls = {r["candidate_id"]: r["url"] for r in shards}
    rejected = pq.read_table(out / REJECTED_DIR / "part-00000.parquet").to_pylist()
    return {
        "success": success,
        "rejected": {r["candidate_id"]: r["reason"] for r in rejected},
        "n_rejected_rows": len(rejected),
        "urls": urls,
        "manifest": manifest.verify(out),
    }


def _kill_mid_download(crawl: Path, out: Path) -> tuple[list[str], float]:
    """Run the download in a subprocess; SIGKILL its process group once a shard is done."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(crawl), str(out), json.dumps(CONFIG.to_dict())],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if list(out.glob("*_stats.json")) and not (out / manifest.MANIFEST_NAME).exists():
                os.killpg(child.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the download ended (rc={child.poll()}) before it could be killed")
        killed_at = time.monotonic()
    finally:
        if child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.wait(timeout=30)
    time.sleep(0.2)  # let the killed group's files settle (nothing should still write)
    return sorted(p.name for p in out.glob("*_stats.json")), killed_at


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    site = build_site(DemoConfig(n_images=60, seed=5, slow_seconds=6.0))
    with serve(site) as server:
        run_crawl(server.seed_urls, CrawlConfig(allow_cidrs=LOOPBACK), root / "crawl")
        whole = run_download(root / "crawl", CONFIG, root / "a")
        done_before, _ = _kill_mid_download(root / "crawl", root / "b")
        partial_manifest = (root / "b" / manifest.MANIFEST_NAME).exists()
        canonical = server.port
    other = build_site(DemoConfig(n_images=60, seed=6))
    with serve(other, port=canonical) as holder, serve_at(site, canonical) as moved:
        rerun = run_download(root / "crawl", CONFIG, root / "b")
        requests = {"holder": holder.access_log.paths(), "moved": moved.access_log.paths(),
                    "live_port": moved.port, "canonical": canonical}
    return {
        "a": _rows(root / "a"),
        "b": _rows(root / "b"),
        "whole": whole,
        "rerun": rerun,
        "done_before": done_before,
        "partial_manifest": partial_manifest,
        "n_shards": len(shard_files(root / "a")),
        "b_dir": root / "b",
        "requests": requests,
    }


def test_kill_happened_mid_download(resumed):
    assert resumed["n_shards"] >= 3
    assert not resumed["partial_manifest"]
    assert 1 <= len(resumed["done_before"]) < resumed["n_shards"]


def test_the_rerun_fetched_from_the_moved_demo_only(resumed):
    requests = resumed["requests"]
    assert requests["live_port"] != requests["canonical"]
    assert not requests["holder"]  # the port's new holder got no request
    assert any(p.startswith("/img/") for p in requests["moved"])  # the rerun downloaded


def test_resumed_rows_equal_an_uninterrupted_run(resumed):
    a, b = resumed["a"], resumed["b"]
    assert b["manifest"]["row_counts"] == a["manifest"]["row_counts"]
    assert resumed["rerun"]["row_counts"] == resumed["whole"]["row_counts"]
    # no loss and no duplicates among the downloaded rows
    assert len(b["success"]) == len(set(b["success"])) == b["manifest"]["row_counts"]["downloaded"]
    assert Counter(b["success"]) == Counter(a["success"])
    assert b["rejected"] == a["rejected"]
    assert b["urls"] == a["urls"]  # the canonical URLs, whichever port served them
    assert b["n_rejected_rows"] == a["n_rejected_rows"] == len(a["rejected"])
    assert "missing" not in Counter(b["rejected"].values())


def test_resumed_directory_is_clean(resumed):
    out = resumed["b_dir"]
    assert len(shard_files(out)) == resumed["n_shards"]
    assert len(list(out.glob("*_stats.json"))) == resumed["n_shards"]
    assert not (out / "_tmp").exists()
