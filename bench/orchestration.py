"""What Prefect orchestration costs: the data flow under Prefect against the same stage
functions called plainly, a cached rerun of the whole pipeline against its first run, and
the fixed cost of a one-stage CLI call (in-process, on an ephemeral Prefect server, on a
running one). ``--make-run`` adds ``make run``'s own pipeline (``brivl pipeline --demo``, the
real corpus) run twice on a fresh home: about 10 minutes more on 2 cores.

Every variant runs in a subprocess with a fresh ``BRIVL_HOME`` on the synthetic demo web
(served here on 127.0.0.1), so no variant reuses another's results or warm caches.

    python bench/orchestration.py [--images 120] [--repeats 2] [--make-run] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import replace_section  # noqa: E402

PYTHON = sys.executable
BRIVL = str(Path(PYTHON).with_name("brivl"))
PREFECT = str(Path(PYTHON).with_name("prefect"))
DATA_CONFIG = {"crawl": {"allow_cidrs": ["127.0.0.1/32"]},
               "download": {"timeout_s": 1.0, "processes_count": 1, "thread_count": 8,
                            "allow_cidrs": ["127.0.0.1/32"]}}
PIPELINE_CONFIG = {
    **DATA_CONFIG,
    "train": {"model": "brivl-tiny", "steps": 6, "batch_size": 8, "warmup_steps": 2,
              "checkpoint_every": 3, "report_every": 3, "vocab_size": 300},
    "eval": {"batch_size": 32}, "index": {"batch_size": 32},
    "generator": {"image_size": 32, "channels": 8, "channel_mult": [1, 2], "latent_dim": 8,
                  "codebook_size": 32, "steps": 2, "batch_size": 4, "log_every": 1},
    "grid": {"visualize": {"steps": 2}, "generate": {"steps": 2}, "cell": 32},
    "prompts": ["a red circle"], "baselines": {"step0": False, "frozen_towers": False},
}
# the data flow, one way or the other, in a fresh process; prints its own wall time
DATA_RUN = r"""
import json, sys, time
from brivl.env import apply_defaults
apply_defaults()
mode, seed, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
start = time.perf_counter()
if mode == "prefect":
    from flows.data import data_flow
    data_flow([seed], config["crawl"], config["download"], {}, {})
else:
    from tasks.crawl import crawl_task
    from tasks.download import download_task
    from tasks.filter import filter_task
    from tasks.shard import shard_task
    crawl = crawl_task.fn([seed], config["crawl"])
    download = download_task.fn(crawl, config["download"])
    shard_task.fn(filter_task.fn(download, {}), {})
print(json.dumps({"inner_s": time.perf_counter() - start}))
"""

# migrate a fresh home's Prefect database, as its first flow run would
MIGRATE = ("from brivl.env import apply_defaults; apply_defaults(); "
           "from tasks.stores import prepare_orchestration_store; prepare_orchestration_store()")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    from brivl.env import HOME_BOUND_KEYS

    env = {k: v for k, v in os.environ.items() if k not in HOME_BOUND_KEYS
           and not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(BRIVL_HOME=str(home), OMP_NUM_THREADS="1", **extra)
    return env


def timed(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def data_flow_overhead(seed: str, repeats: int, scratch: Path) -> dict[str, float]:
    """Process wall time (and the flow call's own time) of the data flow, both ways."""
    out: dict[str, list[float]] = {}
    for i in range(repeats):
        for mode in ("plain", "prefect", "migrated"):  # alternate, so drift hits all three
            home = scratch / f"data-{mode}-{i}"
            env = fresh_env(home)
            if mode == "migrated":  # a home whose Prefect database exists (every run but the
                timed([PYTHON, "-c", MIGRATE], env)  # first): not timed
            run_mode = "plain" if mode == "plain" else "prefect"
            wall, stdout = timed([PYTHON, "-c", DATA_RUN, run_mode, seed,
                                  json.dumps(DATA_CONFIG)], env)
            inner = json.loads(stdout.strip().splitlines()[-1])["inner_s"]
            out.setdefault(f"{mode}_wall", []).append(wall)
            out.setdefault(f"{mode}_inner", []).append(inner)
    return {k: statistics.median(v) for k, v in out.items()}


def pipeline_rerun(seed: str, scratch: Path) -> dict[str, float]:
    """The whole pipeline (tiny config) on a fresh home, then again on the same home."""
    home = scratch / "pipeline"
    config = scratch / "pipeline.json"
    config.write_text(json.dumps(PIPELINE_CONFIG))
    args = [BRIVL, "pipeline", "--seed", seed, "--allow-cidr", "127.0.0.1/32",
            "--config", str(config)]
    first, _ = timed(args, fresh_env(home))
    rerun, _ = timed(args, fresh_env(home))
    return {"first_s": first, "rerun_s": rerun}


def make_run_rerun(scratch: Path) -> dict[str, float]:
    """``make run``'s pipeline (the real demo corpus) on a fresh home, then again on it. The
    first run includes fetching the OpenClipArt packages into that home, as ``make run``
    does on a fresh machine."""
    home = scratch / "make-run"
    args = [BRIVL, "pipeline", "--demo"]
    first, _ = timed(args, fresh_env(home))
    rerun, _ = timed(args, fresh_env(home))
    return {"first_s": first, "rerun_s": rerun}


def cli_fixed_cost(seed: str, repeats: int, scratch: Path) -> dict[str, float]:
    """A one-stage CLI call whose stage is already done (a cache hit), against ``brivl
    --help``: in-process (no server configured, the default), forced onto an ephemeral
    Prefect server (``BRIVL_PREFECT=always``), and against a running server."""
    home = scratch / "cli"
    env = fresh_env(home)
    timed([PYTHON, "-c", DATA_RUN, "prefect", seed, json.dumps(DATA_CONFIG)], env)
    filter_dir = next((home / "data" / "filter").glob("*/_manifest.json")).parent
    shard = [BRIVL, "shard", "--input", str(filter_dir)]
    port = free_port()
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    served_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    try:
        import requests

        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prefect server did not start within 180 s")
            time.sleep(0.5)
        results: dict[str, list[float]] = {}
        for _ in range(repeats):
            results.setdefault("help", []).append(timed([BRIVL, "--help"], env)[0])
            results.setdefault("standalone", []).append(timed(shard, env)[0])
            results.setdefault("ephemeral", []).append(
                timed(shard, {**env, "BRIVL_PREFECT": "always"})[0])
            results.setdefault("served", []).append(timed(shard, served_env)[0])
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {k: statistics.median(v) for k, v in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="demo web pictures")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--make-run", action="store_true",
                        help="also time make run's pipeline and its cached rerun (~10 min)")
    parser.add_argument("--no-record", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    from brivl.demo import DemoConfig, build_site, serve
    from brivl.report import print_table

    site = build_site(DemoConfig(n_images=args.images, seed=11, slow_seconds=1.0))
    with tempfile.TemporaryDirectory(prefix="brivl-bench-orch-") as tmp, serve(site) as server:
        scratch = Path(tmp)
        seed = server.seed_urls[0]
        data = data_flow_overhead(seed, args.repeats, scratch)
        rerun = pipeline_rerun(seed, scratch)
        cli = cli_fixed_cost(seed, args.repeats, scratch)
        full = make_run_rerun(scratch) if args.make_run else None
    rows = [
        {"measure": "data flow, process wall (s)", "plain": data["plain_wall"],
         "Prefect": data["prefect_wall"], "ratio": data["prefect_wall"] / data["plain_wall"],
         "goal": "<= 1.10"},
        {"measure": "data flow, the call alone (s)", "plain": data["plain_inner"],
         "Prefect": data["prefect_inner"], "ratio": data["prefect_inner"] / data["plain_inner"],
         "goal": "<= 1.10"},
        {"measure": "data flow, process wall, home already migrated (s)",
         "plain": data["plain_wall"], "Prefect": data["migrated_wall"],
         "ratio": data["migrated_wall"] / data["plain_wall"], "goal": "<= 1.10"},
        {"measure": "tiny pipeline: first run / cached rerun (s)", "plain": rerun["first_s"],
         "Prefect": rerun["rerun_s"], "ratio": rerun["rerun_s"] / rerun["first_s"],
         "goal": "-"},
    ]
    if full is not None:
        rows.append({"measure": "`make run` pipeline: first run / cached rerun (s)",
                     "plain": full["first_s"], "Prefect": full["rerun_s"],
                     "ratio": full["rerun_s"] / full["first_s"], "goal": "<= 0.05"})
    rows += [
        {"measure": "`brivl shard` cache hit: --help / in-process, no server (s)",
         "plain": cli["help"], "Prefect": cli["standalone"],
         "ratio": cli["standalone"] / cli["help"], "goal": "-"},
        {"measure": "`brivl shard` cache hit: in-process / ephemeral server (s)",
         "plain": cli["standalone"], "Prefect": cli["ephemeral"],
         "ratio": cli["ephemeral"] / cli["standalone"], "goal": "-"},
        {"measure": "`brivl shard` cache hit: in-process / running server (s)",
         "plain": cli["standalone"], "Prefect": cli["served"],
         "ratio": cli["served"] / cli["standalone"], "goal": "-"},
    ]
    print_table("Orchestration cost", rows)
    if not args.no_record:
        lines = ["| measure | baseline | measured | ratio | goal |", "|---|---:|---:|---:|---|"]
        lines += [f"| {r['measure']} | {r['plain']:.1f} | {r['Prefect']:.1f} | "
                  f"{r['ratio']:.2f} | {r['goal']} |" for r in rows]
        lines += ["", f"Synthetic demo web, {args.images} pictures; each variant a fresh process "
                  f"and a fresh `BRIVL_HOME`; medians of {args.repeats}. Baseline column: the "
                  "plain stage functions (`<stage>_task.fn`; the Prefect rows run `flows.data.data_flow`, on "
                  "a fresh home, then on one whose Prefect database was migrated beforehand), "
                  "the first pipeline run, "
                  "`brivl --help`, and the in-process call (no `PREFECT_API_URL`). The "
                  "ephemeral-server call sets `BRIVL_PREFECT=always`; the running-server one "
                  "points `PREFECT_API_URL` at a `prefect server start` on 127.0.0.1."]
        command = f"python bench/orchestration.py --images {args.images} --repeats {args.repeats}"
        command += " --make-run" if args.make_run else ""
        replace_section("## Orchestration cost (issue 15)", command, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
