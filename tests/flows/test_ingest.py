"""The ingest flow (crawl → download) with the real Prefect engine and real img2dataset,
and the ``brivl crawl`` / ``brivl download`` commands."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from brivl import manifest
from brivl.demo import DemoConfig, build_site, serve
from flows.cli import main
from flows.ingest import ingest_flow

CRAWL = {"allow_cidrs": ["127.0.0.1/32"]}
DOWNLOAD = {"timeout_s": 1.0, "processes_count": 1, "thread_count": 8}


def _task_states(flow_state) -> dict[str, str]:
    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name.split("-")[0]: run.state.name for run in runs}


@pytest.fixture(scope="module")
def demo():
    site = build_site(DemoConfig(n_images=60, seed=1, slow_seconds=2.0))
    with serve(site) as server:
        yield site, server


def test_ingest_twice_second_run_is_cached_and_silent(demo):
    site, server = demo
    first = ingest_flow(server.seed_urls, CRAWL, DOWNLOAD, return_state=True)
    result = first.result()
    assert first.is_completed()
    assert _task_states(first) == {"crawl": "Completed", "download": "Completed"}
    counts = result["download_counts"]
    expected = sum(im.fault != "robots_page" for im in site.images)
    assert counts["candidates"] == result["crawl_counts"]["candidates"] == expected
    assert counts["candidates"] == counts["downloaded"] + counts["rejected"]
    assert counts["rejected:http_404"] == site.fault_counts()["http_404"]
    assert manifest.read_manifest(result["download_dir"])["inputs"] == [
        manifest.read_manifest(result["candidates_dir"])["hash"]
    ]
    requests = len(server.access_log)

    second = ingest_flow(server.seed_urls, CRAWL, DOWNLOAD, return_state=True)
    assert _task_states(second) == {"crawl": "Cached", "download": "Cached"}
    assert second.result() == result
    assert len(server.access_log) == requests  # no request at all on the cached run


def test_cli_crawl_then_download_prints_summary(demo, tmp_path, capsys):
    site, server = demo
    out = tmp_path / "crawl"
    seed = ["--seed", server.seed_urls[0], "--allow-cidr", "127.0.0.1/32"]
    assert main(["crawl", *seed, "--max-pages", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out.resolve())
    assert "candidates: allowed" in captured.err
    assert manifest.read_manifest(out)["row_counts"]["pages_fetched"] == 4
    # the flow already downloaded the full crawl with these settings: a Prefect cache hit
    first = ingest_flow(server.seed_urls, CRAWL, DOWNLOAD)
    args = ["download", "--input", first["candidates_dir"], "--allow-cidr", "127.0.0.1/32"]
    args += ["--timeout", "1", "--processes", "1", "--threads", "8"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == first["download_dir"]
    assert "rejected: http_404" in captured.err and "rejected: timeout" in captured.err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["crawl", "--out", str(tmp_path)]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["download", "--input", str(tmp_path)]) == 2
    assert "_manifest.json" in capsys.readouterr().err
