"""crawl_task / download_task: stage identity, Prefect caching, outputs (real Prefect)."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from brivl import manifest
from brivl.crawl.candidates import write_candidates, write_pages
from brivl.demo import DemoConfig, build_site, serve
from tasks.crawl import crawl_task, resolve_crawl
from tasks.download import download_task, resolve_download

CONFIG = {"allow_cidrs": ["127.0.0.1/32"], "max_pages": 5}


@pytest.fixture(scope="module")
def server():
    with serve(build_site(DemoConfig(n_images=60, seed=5))) as running:
        yield running


def test_crawl_task_is_cached_by_seeds_config_and_refresh(server):
    first = crawl_task(server.seed_urls, CONFIG, return_state=True)
    out_dir = first.result()
    assert first.is_completed() and out_dir == str(resolve_crawl(server.seed_urls, CONFIG).out_dir)
    assert manifest.read_manifest(out_dir)["row_counts"]["pages_fetched"] == 5
    requests = len(server.access_log)
    second = crawl_task(server.seed_urls, CONFIG, return_state=True)
    assert second.name == "Cached" and second.result() == out_dir
    assert len(server.access_log) == requests  # nothing fetched again
    # a different config, or a new refresh token, is a different stage run
    assert resolve_crawl(server.seed_urls, {**CONFIG, "max_pages": 6}).out_dir != first.result()
    assert resolve_crawl(server.seed_urls, CONFIG, refresh="2024-01-02").out_dir != out_dir
    # an equivalent config spelled differently (a default written out) is the same run
    assert str(resolve_crawl(server.seed_urls, {**CONFIG, "max_depth": 3}).out_dir) == out_dir


def _rejected_only_candidates(path, n=3):
    now = datetime.now(timezone.utc)
    rows = [
        {
            "candidate_id": f"id{i}",
            "image_url": f"http://127.0.0.1:9/img/{i}.jpg",
            "page_url": "http://127.0.0.1:9/a.html",
            "alt": "",
            "title": "",
            "figcaption": "",
            "surrounding": "",
            "caption": "a caption",
            "caption_source": "alt",
            "crawl_time": now,
            "depth": 1,
            "robots": "disallowed" if i % 2 else "allowed",
            "decision": "robots_disallowed" if i % 2 else "optout_meta",
        }
        for i in range(n)
    ]
    path.mkdir(parents=True)
    write_candidates(rows, path, 100)
    write_pages([], path)
    manifest.write_manifest(
        path, stage="crawl", config={}, inputs=["x"], code_version="t", row_counts={"candidates": n}
    )
    return path


def test_download_task_writes_rejections_and_caches(tmp_path):
    candidates = str(_rejected_only_candidates(tmp_path / "cands"))
    config = {"processes_count": 1}
    first = download_task(candidates, config, return_state=True)
    out_dir = first.result()
    assert out_dir == str(resolve_download(candidates, config).out_dir)
    body = manifest.verify(out_dir)
    assert body["row_counts"]["candidates"] == 3 == body["row_counts"]["rejected"]
    assert body["row_counts"]["rejected:robots_disallowed"] == 1
    assert body["inputs"] == [manifest.read_manifest(candidates)["hash"]]
    reasons = pq.read_table(f"{out_dir}/rejected/part-00000.parquet").column("reason").to_pylist()
    assert sorted(reasons) == ["optout_meta", "optout_meta", "robots_disallowed"]
    assert download_task(candidates, config, return_state=True).name == "Cached"
    # other candidates (another manifest hash) → another stage run
    other = str(_rejected_only_candidates(tmp_path / "cands2", n=4))
    assert resolve_download(other, config).out_dir != resolve_download(candidates, config).out_dir


def test_download_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="image_sise"):
        resolve_download(str(tmp_path), {"image_sise": 3})
