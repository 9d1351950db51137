"""Issue 16 item 8: two ``brivl crawl`` processes of one seed on one fresh ``BRIVL_HOME``.

Before: they raced on MLflow's schema creation (``table registered_models already exists``)
and on Prefect's database, and both wrote the same stage directory. Now the stores are
created once under a file lock, and the stage directory is written by one process while the
other waits, then reuses it. The test holds the crawl directory's lock until both processes
wait on it, so the two really contend for it (not merely run one after the other).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brivl.demo import DemoConfig, build_site, serve
from brivl.env import HOME_BOUND_KEYS
from tasks.crawl import resolve_crawl
from tasks.locking import file_lock

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"allow_cidrs": ["127.0.0.1/32"], "max_pages": 6}
DEADLINE_S = 240


def _start(home: Path, seed: str, config: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in HOME_BOUND_KEYS}
    env.update(BRIVL_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    code = ("import sys\nfrom flows.cli import main\n"
            f"sys.exit(main(['crawl', '--seed', {seed!r}, '--config', {str(config)!r}]))\n")
    with log.open("w") as err:
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)


def _wait_until(check, what: str, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"exited early: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.5)


def test_two_runs_on_a_fresh_home_share_the_stores_and_one_crawl(tmp_path: Path) -> None:
    import mlflow

    home = (tmp_path / "home").resolve()
    config = tmp_path / "crawl.json"
    config.write_text(json.dumps(CONFIG))
    site = build_site(DemoConfig(n_images=40, seed=4))
    with serve(site) as server:
        seed = server.seed_urls[0]
        key = resolve_crawl([seed], CONFIG).key  # the key does not depend on the home
        stage_dir = home / "data" / "crawl" / key
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs: list[subprocess.Popen] = []
        try:
            with file_lock(stage_dir.parent / f".{key}.lock"):
                procs = [_start(home, seed, config, log) for log in logs]
                _wait_until(lambda: all("waiting for the crawl output" in log.read_text()
                                        for log in logs), "both processes wait for the crawl",
                            procs, logs)
            outs = [p.communicate(timeout=DEADLINE_S)[0] for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        errors = [log.read_text() for log in logs]
        assert [p.returncode for p in procs] == [0, 0], errors
        assert [o.strip().splitlines()[-1] for o in outs] == [str(stage_dir)] * 2
        assert server.access_log.paths().count("/") == 1, "the seed page was crawled twice"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`brivl.stage` = 'crawl'")
    assert sorted(r.data.tags["brivl.cached"] for r in runs) == ["False", "True"]
    assert {r.data.tags["brivl.key"] for r in runs} == {key}
