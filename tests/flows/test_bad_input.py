"""Bad input at the command line and in the flows: one line, exit code 2, before any stage.

Each case is one the hardening probe (issue 16 item 9) got a traceback, or a silent exit 0,
or a failure minutes later for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brivl.demo import DemoConfig, build_site, serve
from brivl.env import HOME_BOUND_KEYS, project_home
from brivl.errors import ConfigError, InputError
from flows.cli import main

UNREACHABLE = "http://127.0.0.1:9/"  # nothing listens: a stage that ran would fail differently
ROOT = Path(__file__).resolve().parents[2]


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("brivl ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["crawl", "--seed", "notaurl"],
         "brivl crawl: seed 'notaurl' is not accepted (not a URL); accepted: an http:// or "
         "https:// URL with a host"),
        (["crawl", "--seed", "ftp://127.0.0.1/x"], "(scheme 'ftp'); accepted: an http://"),
        (["crawl", "--seed", UNREACHABLE, "--timeout", "0"],
         "brivl crawl: crawl.timeout_s: 0.0 is not accepted; accepted: a number > 0"),
        (["crawl", "--seed", UNREACHABLE, "--max-pages", "0"],
         "crawl.max_pages: 0 is not accepted; accepted: an integer from 1 to 10000000"),
        (["data", "--seed", "notaurl"], "brivl data: seed 'notaurl' is not accepted"),
        (["pipeline", "--seed", UNREACHABLE, "--stages", "data,foo"],
         "brivl pipeline: stages: ['foo'] not accepted; accepted: a comma list among data, "
         "retrain, index, interpret"),
        (["pipeline", "--seed", "ftp://127.0.0.1/"], "brivl pipeline: seed 'ftp://127.0.0.1/'"),
        (["pretrain", "--shards", ".", "--lr", "-1"],
         "brivl pretrain: train.lr: -1.0 is not accepted; accepted: a number > 0 and <= 10"),
        (["pretrain", "--shards", ".", "--queue-size", "10000000000"],
         "model.queue_size: 10000000000 is not accepted; accepted: an integer from 1 to 1048576"),
        (["pretrain", "--shards", ".", "--set", "use_queue=1"],
         "train.use_queue: 1 is not accepted; accepted: true or false"),
        (["pretrain", "--shards", ".", "--config", "brivl-tiny"],
         "--config names a JSON file of PretrainConfig fields; for the model give --model "
         "brivl-tiny"),
        (["search", "a cat", "-k", "0"],
         "brivl search: -k: 0 is not accepted; accepted: an integer from 1 to 1000"),
        (["visualize", "a cat", "--model", ".", "--out", "x.png", "--views", "0"],
         "visualize.augment.n_views: 0 is not accepted"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, expected):
    code, err = _run(capsys, *argv)
    assert code == 2, err
    assert expected in _one_line(err)


def test_config_files_are_named_when_missing_or_unparsable(capsys, tmp_path: Path):
    missing = tmp_path / "nope.json"
    for command in (["crawl", "--seed", UNREACHABLE], ["pipeline", "--seed", UNREACHABLE],
                    ["data", "--seed", UNREACHABLE], ["pretrain", "--shards", "."]):
        code, err = _run(capsys, *command, "--config", str(missing))
        assert code == 2 and f"--config {missing}: no such file" in _one_line(err), err
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": {"steps": 5,}}')
    code, err = _run(capsys, "pipeline", "--seed", UNREACHABLE, "--config", str(broken))
    assert code == 2
    assert f"--config {broken}: not valid JSON (line 1, column" in _one_line(err)


def test_a_bad_stage_setting_fails_before_any_stage_runs(capsys, tmp_path: Path):
    overrides = tmp_path / "o.json"
    for bad, message in [
        ({"train": {"lr": -1}}, "train.lr: -1 is not accepted"),
        ({"train": {"model_overrides": {"embed_dim": 2**31}}},
         "model.embed_dim: 2147483648 is not accepted; accepted: an integer from 1 to 65536"),
        ({"crawl": {"max_pages": "ten"}}, "crawl.max_pages: 'ten' is not accepted; accepted: "
                                          "an integer from 1 to 10000000"),
        ({"generator": {"steps": -1}}, "generator.steps: -1 is not accepted"),
        ({"grid": {"visualize": {"stepz": 3}}}, "visualize: unknown key(s) ['stepz']"),
        ({"eval_sets": str(tmp_path / "no-evals")}, "no-evals: no such file or directory"),
        ({"trian": {}}, "unknown pipeline config section 'trian'; accepted: ["),
    ]:
        crawls = project_home() / "data" / "crawl"
        before = sorted(crawls.iterdir()) if crawls.exists() else []  # other tests' crawls
        overrides.write_text(json.dumps(bad))
        code, err = _run(capsys, "pipeline", "--seed", UNREACHABLE, "--config", str(overrides))
        assert code == 2 and message in _one_line(err), (bad, err)
        assert (sorted(crawls.iterdir()) if crawls.exists() else []) == before, bad  # no crawl


def test_the_pipeline_flow_checks_every_section_before_the_crawl(tmp_path: Path):
    from flows.pipeline import pipeline_flow

    crawls = project_home() / "data" / "crawl"
    before = set(crawls.iterdir()) if crawls.is_dir() else set()
    with pytest.raises(ConfigError, match=r"train\.batch_size: 0 is not accepted"):
        pipeline_flow([UNREACHABLE], {"train": {"batch_size": 0}})
    after = set(crawls.iterdir()) if crawls.is_dir() else set()
    assert after == before  # no crawl started


def test_a_crawl_without_candidates_stops_the_data_flow_saying_so(capsys, tmp_path: Path):
    from flows.ingest import ingest_flow

    with serve(build_site(DemoConfig(n_images=40, seed=5))) as server:
        seed = f"{server.base_url}/robots.txt"  # fetched, holds no <img>
        crawl = {"allow_cidrs": ["127.0.0.1/32"], "max_depth": 0}
        with pytest.raises(InputError, match=r"^no candidates from these seeds \["):
            ingest_flow([seed], crawl, {})
        capsys.readouterr()  # the flow's own log: Prefect reports the failure with its traceback
        code, err = _run(capsys, "data", "--seed", seed, "--allow-cidr", "127.0.0.1/32",
                         "--config", str(_write(tmp_path / "c.json", {"crawl": {"max_depth": 0}})))
    assert code == 2
    assert _one_line(err).startswith("brivl data: no candidates from these seeds")
    assert "pages.parquet" in err


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


FRESH_HOME_CASES = [
    (["crawl", "--seed", "notaurl"], "brivl crawl: seed 'notaurl' is not accepted"),
    (["shard", "--input", ".", "--rows-per-shard", "0"],
     "brivl shard: shard.rows_per_shard: 0 is not accepted"),
    (["pipeline", "--seed", UNREACHABLE, "--steps", "0"],
     "brivl pipeline: train.steps: 0 is not accepted"),
    (["demo", "serve", "--images", "0"], "brivl demo: --images: 0 is not accepted"),
]


def test_bad_arguments_on_a_fresh_home_fail_before_the_stores_are_set_up(tmp_path: Path):
    """The CLI migrated a fresh home's Prefect database (~30 s) before it read its arguments;
    now they are checked first, and a bad one leaves the fresh home without a database."""
    env = {k: v for k, v in os.environ.items() if k not in HOME_BOUND_KEYS}
    seconds = {}
    for argv, expected in FRESH_HOME_CASES:
        home = tmp_path / argv[0]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *argv], cwd=ROOT,
                              env={**env, "BRIVL_HOME": str(home), "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=120)
        seconds[argv[0]] = time.monotonic() - started
        assert proc.returncode == 2 and expected in _one_line(proc.stderr), proc.stderr
        assert not [p.name for p in home.rglob("*") if p.suffix == ".db" or "db-ready" in p.name]
    assert seconds["crawl"] < 10 and seconds["shard"] < 10, seconds  # the migration took ~30 s
