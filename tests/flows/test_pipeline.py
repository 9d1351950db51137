"""End to end: the whole DAG on a tiny demo web with the tiny config registers a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from brivl.demo import DemoConfig, build_site, serve
from brivl.manifest import read_manifest

pytestmark = pytest.mark.slow

CONFIG = {
    "crawl": {"allow_cidrs": ["127.0.0.1/32"]},
    "download": {"timeout_s": 1.0, "processes_count": 1, "thread_count": 8},
    "train": {"model": "brivl-tiny", "steps": 6, "batch_size": 8, "warmup_steps": 2,
              "checkpoint_every": 3, "report_every": 3, "vocab_size": 300},
    "eval": {"batch_size": 32},
    "index": {"batch_size": 32},
    "generator": {"image_size": 32, "channels": 8, "channel_mult": [1, 2], "latent_dim": 8,
                  "codebook_size": 32, "steps": 2, "batch_size": 4, "log_every": 1},
    "grid": {"visualize": {"steps": 2}, "generate": {"steps": 2}, "cell": 32},
    "prompts": ["a red circle"],
}
STAGE_RUNS = {"crawl", "download", "filter", "shard", "pretrain", "evaluate", "register",
              "index", "generator", "grid"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    site = build_site(DemoConfig(n_images=80, seed=3, slow_seconds=1.5, face_photos=2))
    eval_dir = tmp_path_factory.mktemp("eval")
    site.eval_sets(eval_dir, n_zeroshot=24, n_retrieval=16, n_text=24, n_vqa=24)
    with serve(site) as server:
        server.site = site
        yield server, eval_dir


def test_pipeline_registers_a_model_with_lineage(demo, capsys) -> None:
    import mlflow

    from flows.commands.pipeline import print_summary
    from flows.pipeline import pipeline_flow

    server, eval_dir = demo
    result = pipeline_flow(server.seed_urls, {**CONFIG, "eval_sets": str(eval_dir)})

    shards = read_manifest(result["data"]["shard_dir"])
    assert shards["row_counts"]["train"] > 0
    model = result["model"]
    assert Path(model["checkpoint"]).is_dir()
    assert any(k.startswith("retrieval") for k in model["metrics"]), model["metrics"]
    registered = model["registered"]
    assert registered["alias"] == "champion"  # the first version has no champion to beat

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("brivl", "champion")
    assert int(version.version) == registered["version"]
    tags = version.tags
    assert shards["hash"] in tags.values(), "the registered model must name its shard manifest"

    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    stages = {run.data.tags.get("brivl.stage") for run in children}
    assert stages == STAGE_RUNS, stages
    for run in children:
        _assert_normalised_config_logged(run)
        if run.data.tags["brivl.stage"] == "evaluate":  # it reports the filter's decontamination
            found = (Path(run.data.tags["brivl.out_dir"]) / "decontamination.json").read_text()
            assert '"found": 0' in found and '"same_eval_sets": true' in found, found
            assert run.data.metrics["decontamination.found"] == 0
    assert Path(result["index_dir"]).is_dir() and Path(result["prompt_grid"]).is_file()

    print_summary(result, seconds=1.0)
    summary = capsys.readouterr().err
    assert "Rows per stage" in summary and registered["model_uri"] in summary


def _assert_normalised_config_logged(run) -> None:
    """A stage's child run: its normalised config as params, its manifest counts as metrics."""
    from tasks.tracking import clean_key, flatten_params

    stage = run.data.tags["brivl.stage"]
    body = read_manifest(run.data.tags["brivl.out_dir"])
    assert body["stage"] == stage
    expected = {clean_key(k): v for k, v in flatten_params({"config": body["config"]}).items()}
    logged = {k: v for k, v in run.data.params.items() if k.startswith("config.")}
    assert logged == expected, stage
    for name, count in body["row_counts"].items():
        assert run.data.metrics[clean_key(f"{stage}.rows.{name}")] == count, (stage, name)
    normalised = {  # each stage's typed config, defaults filled in although CONFIG omits them
        "filter": "config.min_image_side", "shard": "config.rows_per_shard",
        "crawl": "config.max_depth", "download": "config.number_sample_per_shard",
        "pretrain": "config.lr", "evaluate": "config.ks", "index": "config.index_name",
        "generator": "config.beta", "grid": "config.visualize.lr",
        "register": "config.primary_metric",
    }
    assert normalised[stage] in logged, (stage, sorted(logged))
    if stage == "pretrain":  # the shards it trained on are its MLflow dataset input
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert dataset.digest == body["inputs"][0][:36] and dataset.name.startswith("shard ")


def test_brivl_data_reruns_the_same_data_flow_from_cache(demo, tmp_path, capsys) -> None:
    """`brivl data` with the pipeline's data config: every stage comes from the cache."""
    import json

    from flows.cli import main
    from flows.data import data_flow

    server, _ = demo
    config = tmp_path / "data.json"
    config.write_text(json.dumps({"download": CONFIG["download"]}))
    before = len(server.access_log.snapshot())
    assert main(["data", "--seed", server.seed_urls[0], "--allow-cidr", "127.0.0.1/32",
                 "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "Rows per stage" in err and "Rejected by reason" in err
    assert len(server.access_log.snapshot()) == before, "a cached rerun must not fetch anything"
    state = data_flow(server.seed_urls, {"allow_cidrs": ["127.0.0.1/32"]}, CONFIG["download"],
                      {}, {}, return_state=True)
    assert out.strip().splitlines()[-1] == state.result()["shard_dir"]


# fault kind of the demo web -> the reasons the data flow may record for it
EXPECTED_REASONS = {
    "robots": {"robots_disallowed"},
    "optout_meta": {"optout_meta"},
    "optout_header": {"optout_header"},
    "http_404": {"http_404"},
    "http_500": {"http_500"},
    "slow": {"timeout"},
    "not_image": {"not_image"},
    "truncated": {"truncated"},
    "bomb": {"decompression_bomb"},
    "redirect_loop": {"redirect_loop"},
    "tiny": {"image_too_small"},
    "aspect": {"aspect_ratio"},
    "empty_text": {"caption_too_short"},
    "overlong_text": {"caption_too_long"},
    "spam_text": {"spam"},
    "blocklisted_text": {"blocklist"},
    "face": {"face"},  # face_policy "drop"
}
POLICY_RULES = ("face", "eval_overlap", "model_score")  # the responsible-data rules


def test_every_candidate_is_in_the_shards_or_rejected_with_its_reason(demo, tmp_path) -> None:
    """Accounting across the whole data flow: download reasons and filter rules included, with
    per-host caps on, faces dropped, the eval sets (plus two planted copies of crawled
    images) decontaminated and the model-score rule (a step-0 brivl-tiny) cutting the rest;
    every reason's count as its stage recorded it equals the rows that carry it."""
    import json
    from collections import Counter
    from urllib.parse import urlparse

    import pyarrow as pa
    import pyarrow.parquet as pq

    from brivl.demo.site import SITE_COPYRIGHT, SITE_LICENCE
    from brivl.evaluate.runner import resolve_sets
    from brivl.model import create_model, save_checkpoint
    from brivl.model.tokenizer import train_tokenizer
    from flows.data import data_flow

    server, eval_dir = demo
    sources = {i.source_path for i in server.site.images if i.source_path}
    planted = [i.path for i in server.site.images if i.fault is None and i.path not in sources][:2]
    pq.write_table(pa.table({"image": [server.site.image_bytes(p) for p in planted],
                             "caption": ["planted one", "planted two"]}), tmp_path / "planted.parquet")
    eval_sets = {**{k: str(v) for k, v in resolve_sets(eval_dir).items()},
                 "planted": str(tmp_path / "planted.parquet")}
    polite = {**CONFIG["download"], "per_host_concurrency": 4, "per_host_rate": 200.0}
    scorer = save_checkpoint(create_model("brivl-tiny", tokenizer=train_tokenizer(
        [i.caption for i in server.site.images], vocab_size=300, min_frequency=1)),
        tmp_path / "scorer")  # step 0: its scores are noise, which is all the rule needs here
    rules = {"face_policy": "drop", "model_score": str(scorer), "model_score_top_fraction": 0.9}
    data = data_flow(server.seed_urls, CONFIG["crawl"], polite, rules, {}, eval_sets=eval_sets)

    def table(folder: str, columns: list[str]) -> list[dict]:
        return [row for f in sorted(Path(folder).rglob("*.parquet"))
                for row in pq.read_table(f, columns=columns).to_pylist()]

    outcome: dict[str, str] = {}
    for row in table(f"{data['download_dir']}/rejected", ["image_url", "reason"]):
        outcome[urlparse(row["image_url"]).path] = row["reason"]
    for row in table(f"{data['filter_dir']}/rejected", ["url", "rule"]):
        outcome[urlparse(row["url"]).path] = row["rule"]
    shard_rows = [r for split in ("train", "val") for r in table(
        f"{data['shard_dir']}/{split}",
        ["url", "licence", "licence_source", "copyright", "face_count", "brivl_score"])]
    kept = [urlparse(r["url"]).path for r in shard_rows]
    assert {(r["licence"], r["licence_source"], r["copyright"]) for r in shard_rows} == {
        (SITE_LICENCE, "page_link", SITE_COPYRIGHT)}  # the pages' declaration, kept to the end
    assert {r["face_count"] for r in shard_rows} == {0}  # searched, and faces were dropped
    assert not set(kept) & set(outcome), "a row is both kept and rejected"
    outcome.update(dict.fromkeys(kept, "kept"))

    site = server.site
    candidates = {i.path: i for i in site.images if i.fault != "robots_page"}
    assert set(outcome) == set(candidates), "every candidate ends kept or rejected, nothing else"
    crawl = read_manifest(data["crawl_dir"])["row_counts"]["candidates"]
    assert crawl == len(candidates) == len(outcome)

    for path, truth in candidates.items():
        if truth.fault in EXPECTED_REASONS:
            assert outcome[path] in EXPECTED_REASONS[truth.fault], (path, truth.fault, outcome[path])
    report = json.loads((Path(data["filter_dir"]) / "filter_report.json").read_text())
    assert [outcome[p] for p in planted] == ["eval_overlap"] * 2
    assert report["eval_overlap"]["found_per_set"] == {"planted": 2}  # held-out sets: no leak
    faces = [p for p, truth in candidates.items() if truth.fault == "face"]
    assert len(faces) == 2 and report["faces"]["policy"] == "drop"
    assert report["faces"]["dropped"] == 2 and report["faces"]["searched"] > 0

    # every reason with its count: what each stage recorded equals the rows that carry it
    download = read_manifest(data["download_dir"])
    download_rows = Counter(r["reason"] for r in table(
        f"{data['download_dir']}/rejected", ["reason"]))
    assert {k.split(":", 1)[1]: v for k, v in download["row_counts"].items()
            if k.startswith("rejected:") and v} == download_rows
    filter_rows = Counter(r["rule"] for r in table(f"{data['filter_dir']}/rejected", ["rule"]))
    assert {k: v for k, v in report["by_rule"].items() if v} == filter_rows
    assert Counter(outcome.values()) == download_rows + filter_rows + Counter(kept=len(kept))
    for fault, reasons in EXPECTED_REASONS.items():  # each fault kind seen, under its reason
        assert any(outcome[p] in reasons for p, t in candidates.items() if t.fault == fault), fault
    assert all(filter_rows[rule] > 0 for rule in POLICY_RULES), filter_rows
    sheet = json.loads((Path(data["shard_dir"]) / "datasheet.json").read_text())
    filtered = next(step for step in sheet["funnel"] if step["stage"] == "filter")
    assert filtered["rejected"] == dict(filter_rows) and sheet["faces"]["dropped_by_filter"] == 2

    # the model-score rule: which model cut, where, and its score on every sharded row
    scored = report["model_score"]
    assert read_manifest(data["filter_dir"])["extra"]["model_score"]["model"] == str(scorer)
    assert scored["rejected"] == filter_rows["model_score"]
    assert scored["kept"] == round(0.9 * scored["scored"]) >= len(kept)
    assert min(r["brivl_score"] for r in shard_rows) >= scored["cut"]

    (host,) = download["extra"]["hosts"].values()  # the per-host caps were on: their stats
    assert host["requests"] >= download["row_counts"]["attempted"] > 0
    for kind in ("duplicate", "near_duplicate"):
        groups: dict[str, list[str]] = {}
        for truth in candidates.values():
            if truth.fault == kind:
                groups.setdefault(truth.source_path, [truth.source_path]).append(truth.path)
        assert groups, kind
        rule = "duplicate_image" if kind == "duplicate" else "near_duplicate"
        reached_dedup = 0
        for members in groups.values():
            # members rejected by an earlier per-row rule never reach dedup; the model-score
            # rule runs after dedup, so a member it rejected passed dedup
            survivors = [outcome[m] for m in members if outcome[m] in ("kept", rule, "model_score")]
            assert survivors.count("kept") <= 1, (kind, members, survivors)
            assert len(survivors) <= 1 or rule in survivors, (kind, members, survivors)
            reached_dedup += len(survivors) >= 2
        assert reached_dedup, f"no {kind} group reached dedup with two members: untested"
