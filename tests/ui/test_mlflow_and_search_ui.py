"""The MLflow UI and the search page, rendered by Debian's headless Chromium.

A small pipeline runs on the synthetic demo web; then the real ``mlflow server`` serves its
store and ``brivl search --serve`` its index, and the browser checks that what an analyst
opens renders: the run tree, a training curve, the evaluation table, the retrieval grid, and
a text search with results. Screenshots go to ``$BRIVL_UI_SHOTS`` (default
``test-artifacts/ui/``). Run with ``make test-ui``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from brivl.demo import DemoConfig, build_site, serve

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRAINING_VIEW = "workflowType=machine_learning"  # MLflow 3.17's model-training side of its UI
STAGES = ("crawl", "download", "filter", "shard", "pretrain", "evaluate", "register", "index",
          "generator", "grid")
CONFIG = {
    "crawl": {"allow_cidrs": ["127.0.0.1/32"]},
    "download": {"timeout_s": 1.0, "processes_count": 1, "thread_count": 8},
    "train": {"model": "brivl-tiny", "steps": 6, "batch_size": 8, "warmup_steps": 2,
              "checkpoint_every": 3, "report_every": 1, "vocab_size": 300},
    "eval": {"batch_size": 32},
    "index": {"batch_size": 32},
    "generator": {"image_size": 32, "channels": 8, "channel_mult": [1, 2], "latent_dim": 8,
                  "codebook_size": 32, "steps": 2, "batch_size": 4, "log_every": 1},
    "grid": {"visualize": {"steps": 2}, "generate": {"steps": 2}, "cell": 32},
    "prompts": ["a red circle"],
}


def wait_healthy(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not healthy at {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    """A finished small pipeline (its demo web still served, so search results show images)."""
    from flows.pipeline import pipeline_flow

    site = build_site(DemoConfig(n_images=80, seed=3, slow_seconds=1.5))
    eval_dir = tmp_path_factory.mktemp("eval")
    site.eval_sets(eval_dir, n_zeroshot=24, n_retrieval=16, n_text=24, n_vqa=24)
    with serve(site) as server:
        yield pipeline_flow(server.seed_urls, {**CONFIG, "eval_sets": str(eval_dir)})


@pytest.fixture(scope="module")
def runs(pipeline) -> dict[str, str]:
    """Run ids by stage (the pipeline run as "pipeline"), and the experiment id."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(pipeline["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    found = {"pipeline": parent.info.run_id, "experiment": parent.info.experiment_id}
    for run in children:  # the first of each stage (not the baselines' labelled runs)
        if run.info.run_name in STAGES:
            found[run.info.run_name] = run.info.run_id
    return found


@pytest.fixture(scope="module")
def mlflow_ui(pipeline, ui) -> str:
    port = ui.free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", os.environ["MLFLOW_TRACKING_URI"],
         "--artifacts-destination", os.environ["MLFLOW_ARTIFACTS_DESTINATION"],
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, "mlflow server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_the_printed_link_opens_the_run_table_and_it_expands_to_every_stage(
        browser, mlflow_ui, runs, ui) -> None:
    from tasks.tracking import ui_runs_url

    port = int(mlflow_ui.rsplit(":", 1)[1])
    browser.goto(ui_runs_url(runs["experiment"], port))  # the link the closing summary prints
    browser.wait_for_text("pipeline", "matching runs")
    clicked = browser.evaluate(
        "(() => { const b = [...document.querySelectorAll("
        "'button[data-component-id*=runnamecellrenderer]')]; b.forEach(x => x.click());"
        " return b.length; })()")
    assert clicked >= 1, "the pipeline row has no expander for its child runs"
    text = browser.wait_for_text(*STAGES)
    assert "shard " in text, "the pretrain row's Dataset column names no shard manifest"
    ui.assert_not_blank(browser.screenshot(ui.SHOTS / "mlflow_run_tree.png"))


def test_the_pretrain_run_shows_its_training_curves(browser, mlflow_ui, runs, ui) -> None:
    browser.goto("about:blank")
    browser.goto(f"{mlflow_ui}/#/experiments/{runs['experiment']}/runs/{runs['pretrain']}"
                 f"/model-metrics?{TRAINING_VIEW}")
    browser.wait_for_text("train\n(", "final\n(")
    browser.evaluate(
        "(() => { const h = [...document.querySelectorAll('*')].find(e =>"
        " e.children.length === 0 && e.innerText && e.innerText.trim() === 'train');"
        " h.scrollIntoView(); return true; })()")
    browser.wait_for_text("pretrain (train/loss)")
    browser.wait_for("document.querySelectorAll('.js-plotly-plot, .main-svg').length > 0",
                     "a plotted chart")
    time.sleep(1)
    ui.assert_not_blank(browser.screenshot(ui.SHOTS / "mlflow_training_curve.png"))


def test_the_evaluate_run_shows_its_table_and_retrieval_grid(browser, mlflow_ui, runs, ui) -> None:
    base = f"{mlflow_ui}/#/experiments/{runs['experiment']}/runs/{runs['evaluate']}/artifacts"
    browser.goto("about:blank")
    browser.goto(f"{base}/tables/metrics.json?{TRAINING_VIEW}")
    browser.wait_for_text("View as table", "retrieval/mean_recall", "retrieval/i2t_r1")
    ui.assert_not_blank(browser.screenshot(ui.SHOTS / "mlflow_evaluation_table.png"))
    browser.goto("about:blank")
    browser.goto(f"{base}/images/retrieval_grid.png?{TRAINING_VIEW}")
    browser.wait_for("[...document.querySelectorAll('img')].some(i => i.naturalWidth > 100 &&"
                     " i.naturalHeight > 100)", "the retrieval grid image")
    browser.wait_for_text("retrieval_grid.sources.md")  # its sources table sits beside it
    ui.assert_not_blank(browser.screenshot(ui.SHOTS / "mlflow_retrieval_grid.png"))


def test_the_search_page_answers_a_text_query(browser, pipeline, ui) -> None:
    port = ui.free_port()
    proc = subprocess.Popen([str(BIN / "brivl"), "search", "--serve", "--index",
                             pipeline["index_dir"], "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/indices-list", proc, "brivl search --serve")
        browser.goto(f"http://127.0.0.1:{port}/?query=a%20red%20circle")
        front = "document.querySelector('clip-front')"
        browser.wait_for(f"{front} && {front}.indices && {front}.indices.length", "the index list")
        # the tiny model's embeddings are all near each other: show every result
        browser.evaluate(f"(() => {{ const f = {front}; f.hideDuplicateImages = false;"
                         " f.hideDuplicateUrls = false; f.textSearch(); return true; })()")
        shown = browser.wait_for(
            f"(() => {{ const imgs = [...{front}.shadowRoot.querySelectorAll('img')]"
            ".filter(i => i.naturalWidth > 0 && i.src.includes('/img/'));"
            " return imgs.length >= 3 ? imgs.length : 0; })()", "three result images")
        assert shown >= 3
        time.sleep(1)
        ui.assert_not_blank(browser.screenshot(ui.SHOTS / "search_page.png"))
    finally:
        stop(proc)
