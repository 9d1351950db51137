"""``brivl pipeline``: the whole DAG on the demo web (``--demo``) or on any site."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from flows.checks import STAGES
from flows.commands import checked

HELP = "run crawl → download → filter → shard → pretrain → evaluate → register → index → interpret"
DEMO_PORT = 8731  # the demo's canonical port: in its seeds and rows, whichever port it listens on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from flows.commands.demo import DEMO_WEBS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", nargs="?", const="openclipart", choices=DEMO_WEBS, metavar="WEB",
                        help="serve a demo web on 127.0.0.1 and crawl it: openclipart (the default:"
                        " Debian's OpenClipArt pictures, fetched once with apt) or synthetic")
    source.add_argument("--seed", action="append", metavar="URL", help="seed URL (repeatable)")
    parser.add_argument("--demo-images", type=int, default=None,
                        help="images on the demo web (default: openclipart every picture not "
                        "held out, synthetic 3000)")
    parser.add_argument("--allow-domain", action="append", default=[], metavar="DOMAIN",
                        help="domain the crawler may visit (default: the seeds' hosts)")
    parser.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR",
                        help="private/loopback network the crawler may reach on purpose, e.g. 10.0.0.0/8")
    parser.add_argument("--max-pages", type=int, default=None, help="crawl page limit")
    parser.add_argument("--model", "--model-config", dest="model", default=None,
                        help="model config name (default: the CPU recipe's, flows/pipeline.py "
                        "CPU_TRAIN; also brivl-tiny, brivl-paper)")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray Train workers (0 = train in-process)")
    parser.add_argument("--eval-sets", default=None, metavar="PATH",
                        help="eval sets: a directory of them, or one Parquet/CSV file, ImageFolder "
                        "tree or webdataset directory (the demo writes its own)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma list among {','.join(STAGES)} (default: all)")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help="JSON file with per-stage config overrides (see flows/pipeline.py)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from brivl.config_parse import read_json_config

    cfg: dict[str, Any] = read_json_config(args.config) if args.config else {}
    cfg.setdefault("crawl", {})
    cfg.setdefault("train", {})
    if args.allow_domain:
        cfg["crawl"]["allowed_domains"] = args.allow_domain
    if args.allow_cidr:
        cfg["crawl"]["allow_cidrs"] = args.allow_cidr
    if args.max_pages is not None:
        cfg["crawl"]["max_pages"] = args.max_pages
    if args.model:
        cfg["train"]["model"] = args.model
    for key in ("steps", "batch_size", "workers"):
        if getattr(args, key) is not None:
            cfg["train"][key] = getattr(args, key)
    cfg["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    return cfg


@contextlib.contextmanager
def _demo_source(args: argparse.Namespace, cfg: dict[str, Any]):
    """Serve the demo web, write its eval sets, and point the crawl at it.

    The seed names the demo by content, never by where it listens: the canonical origin
    ``http://127.0.0.1:DEMO_PORT`` (when that port is taken, the server listens elsewhere and
    this process's crawl and download connect there through a port forward,
    :func:`brivl.demo.serve_at`), and a fragment naming the web, its size and its content
    (:func:`brivl.demo.identity.site_identity`). The crawler drops the fragment, but the
    crawl's cache key (the seed list) keeps different webs apart, and the same web has the
    same key, candidates and rows on any port: a killed run resumes on another one."""
    from brivl.demo import serve_at
    from brivl.demo.identity import site_identity
    from brivl.env import project_home
    from flows.commands.demo import build_demo_web

    web, site = build_demo_web(args.demo, args.demo_images)
    label = f"{web}-{len(site.images)}-{site_identity(site)}"
    name = f"openclipart-{site.heldout_key()}" if web == "openclipart" else f"demo-{len(site.images)}"
    eval_dir = project_home() / "eval" / name
    if not (eval_dir / "_manifest.json").exists():
        site.eval_sets(eval_dir)
    cfg.setdefault("eval_sets", str(eval_dir))
    with serve_at(site, DEMO_PORT) as server:
        cfg["crawl"].setdefault("allow_cidrs", [f"{server.host}/32"])
        # below the demo's slow-body stall, so the "slow" fault shows up as a timeout
        cfg.setdefault("download", {}).setdefault("timeout_s", 2.0)
        yield [f"{server.origin}/#{label}"]


def check(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's config overrides, once every stage's section (merged with the defaults)
    and the seeds are checked: before any setup, and before any stage runs."""
    from brivl.crawl.seeds import check_seeds
    from flows.checks import check_pipeline_config
    from flows.commands.demo import check_images
    from flows.pipeline import merged_config

    check_images(args.demo_images, "--demo-images")
    cfg = _overrides(args)
    if args.eval_sets:
        cfg["eval_sets"] = args.eval_sets
    check_pipeline_config(merged_config(cfg))
    if args.seed:
        check_seeds(args.seed)
    return cfg


def run(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline_flow
    from tasks.prefect_server import wait_ready

    cfg = checked(args, check)
    started = time.monotonic()
    source = _demo_source(args, cfg) if args.demo else contextlib.nullcontext(args.seed)
    with source as seeds:
        wait_ready()  # the ephemeral Prefect server booted meanwhile (tasks.prefect_server)
        result = pipeline_flow(seeds, cfg)
    print_summary(result, time.monotonic() - started)
    return 0


def print_summary(result: dict[str, Any], seconds: float) -> None:
    """The closing summary: counts per stage, metrics, model URI, how to open the UIs."""
    from brivl.report import print_table
    from tasks.tracking import ui_command, ui_runs_url

    print_table("Rows per stage", stage_rows(result["data"]))
    print_table("Rejected by reason", rejection_rows(result["data"]))
    model = result.get("model")
    if model:
        print_table("Evaluation on the held-out sets (trained model vs baselines)",
                    comparison_rows(model["metrics"], model.get("baselines", {})))
        reg = model["registered"]
        print_table(
            "Model",
            {
                "checkpoint": model["checkpoint"],
                "model URI": reg.get("model_uri", ""),
                "alias": reg.get("alias_uri", ""),
                "gate": reg.get("decision", {}).get("reason", reg.get("decision", {}).get("outcome", "")),
            },
        )
    grid = result.get("prompt_grid")
    if grid and Path(grid).with_suffix(".json").is_file():
        from brivl.interpret.grid import grid_rows

        summary = json.loads(Path(grid).with_suffix(".json").read_text())
        print_table("Prompt grid: similarity to the prompt, rank among prompts, colours shown",
                    grid_rows(summary))
    extras: dict[str, Any] = {}
    if result.get("index_dir"):
        from brivl.retrieval.service import service_hint

        search, serve = service_hint(result["index_dir"]).splitlines()
        extras.update({"search": search.split(": ", 1)[1], "search service": serve.split(":  ", 1)[1]})
    extras.update({
        "prompt grid": result.get("prompt_grid", "-"),
        "Prefect UI": "make serve, then http://127.0.0.1:4200",
        "MLflow UI": ui_command(),
        "MLflow runs": ui_runs_url(result["mlflow_experiment_id"])
        if result.get("mlflow_experiment_id") else "-",
        "wall time": f"{seconds:.0f} s",
    })
    print_table("Next", extras)
    sys.stdout.flush()


# (rows in, rows out) keys of each data stage's manifest row counts
STAGE_FLOW = {
    "crawl": ("pages", "candidates"),
    "download": ("candidates", "downloaded"),
    "filter": ("input", "kept"),
    "shard": ("total", "train"),
}
HEADLINE = ("mean_recall", "_r1", "top1", "linear_probe_acc", "vqa/acc", "zeroshot_acc")


def stage_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per data stage: rows in, rows out, rows rejected (shard: train/val)."""
    from brivl.manifest import read_manifest

    rows = []
    for stage, (rows_in, rows_out) in STAGE_FLOW.items():
        counts = read_manifest(data[f"{stage}_dir"])["row_counts"]
        row = {"stage": stage, "in": counts.get(rows_in, 0), "out": counts.get(rows_out, 0)}
        row["rejected"] = counts.get("val", 0) if stage == "shard" else row["in"] - row["out"]
        rows.append(row)
    rows[0]["note"] = "in = pages, out = image candidates, rejected = pages not fetched"
    rows[0]["rejected"] = rows[0]["in"] - read_manifest(data["crawl_dir"])["row_counts"].get(
        "pages_fetched", rows[0]["in"]
    )
    rows[-1]["note"] = "out = train, rejected column = val"
    return rows


def rejection_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows rejected per reason: download's reasons, then the filter's first failing rule."""
    from brivl.manifest import read_manifest

    rows = []
    download = read_manifest(data["download_dir"])["row_counts"]
    for key, count in sorted(download.items()):
        if key.startswith("rejected:") and count:
            rows.append({"stage": "download", "reason": key.split(":", 1)[1], "rows": count})
    report = read_manifest(data["filter_dir"]).get("extra", {}).get("report", {})
    for rule, count in report.get("by_rule", {}).items():
        if count:
            rows.append({"stage": "filter", "reason": rule, "rows": count})
    return rows


BASELINE_COLUMNS = {"step0": "step 0", "frozen_towers": "frozen towers (LiT)"}


def comparison_rows(metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per headline metric: the trained model, then each baseline beside it."""
    held_out = {k: v for k, v in headline_metrics(metrics).items()
                if not k.startswith(("train/", "baseline/"))}
    rows = []
    for name, value in held_out.items():
        row: dict[str, Any] = {"metric": name, "trained": round(value, 4)}
        for key, column in BASELINE_COLUMNS.items():
            if key in baselines:
                other = baselines[key].get(name)
                row[column] = round(other, 4) if isinstance(other, float) else "-"
        rows.append(row)
    for name, value in headline_metrics(metrics).items():
        if name.startswith("train/"):
            rows.append({"metric": name, "trained": round(value, 4)})
    return rows


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics worth a glance (recalls, accuracies), without bookkeeping counts."""
    return {
        k: v for k, v in sorted(metrics.items())
        if isinstance(v, float) and any(h in k for h in HEADLINE)
    }
