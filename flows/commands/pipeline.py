"""``brivl pipeline``: the whole DAG on the demo web (``--demo``) or on any site."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

HELP = "run crawl → download → filter → shard → pretrain → evaluate → register → index → interpret"
DEMO_PORT = 8731  # fixed so reruns hit the cache (seed URLs are part of the crawl's identity)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="serve the demo web on 127.0.0.1 and crawl it")
    source.add_argument("--seed", action="append", metavar="URL", help="seed URL (repeatable)")
    parser.add_argument("--demo-images", type=int, default=3000, help="demo web size (default 3000)")
    parser.add_argument("--allow-domain", action="append", default=[], metavar="DOMAIN",
                        help="domain the crawler may visit (default: the seeds' hosts)")
    parser.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR",
                        help="private/loopback network the crawler may reach on purpose, e.g. 10.0.0.0/8")
    parser.add_argument("--max-pages", type=int, default=None, help="crawl page limit")
    parser.add_argument("--model-config", default="brivl-tiny",
                        help="model config name (brivl-tiny, brivl-lite, ...)")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray Train workers (0 = train in-process)")
    parser.add_argument("--eval-sets", default=None, metavar="DIR",
                        help="directory of eval Parquet sets (the demo writes its own)")
    parser.add_argument("--stages", default="data,retrain,index,interpret",
                        help="comma list among data,retrain,index,interpret")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help="JSON file with per-stage config overrides (see flows/pipeline.py)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads(Path(args.config).read_text()) if args.config else {}
    cfg.setdefault("crawl", {})
    cfg.setdefault("train", {})
    if args.allow_domain:
        cfg["crawl"]["allowed_domains"] = args.allow_domain
    if args.allow_cidr:
        cfg["crawl"]["allow_cidrs"] = args.allow_cidr
    if args.max_pages is not None:
        cfg["crawl"]["max_pages"] = args.max_pages
    cfg["train"]["model"] = args.model_config
    for key in ("steps", "batch_size", "workers"):
        if getattr(args, key) is not None:
            cfg["train"][key] = getattr(args, key)
    cfg["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    return cfg


@contextlib.contextmanager
def _demo_source(args: argparse.Namespace, cfg: dict[str, Any]):
    """Serve the demo web, write its eval sets, and point the crawl at it."""
    from brivl.demo import DemoConfig, build_site, serve
    from brivl.env import project_home

    site = build_site(DemoConfig(n_images=args.demo_images))
    eval_dir = project_home() / "eval" / f"demo-{args.demo_images}"
    if not (eval_dir / "retrieval.parquet").exists():
        site.eval_sets(eval_dir)
    cfg.setdefault("eval_sets", str(eval_dir))
    try:
        server = serve(site, port=DEMO_PORT)
    except OSError:
        server = serve(site, port=0)
    with server:
        cfg["crawl"].setdefault("allow_cidrs", [f"{server.host}/32"])
        yield server.seed_urls


def run(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline_flow

    cfg = _overrides(args)
    if args.eval_sets:
        cfg["eval_sets"] = args.eval_sets
    started = time.monotonic()
    source = _demo_source(args, cfg) if args.demo else contextlib.nullcontext(args.seed)
    with source as seeds:
        result = pipeline_flow(seeds, cfg)
    print_summary(result, time.monotonic() - started)
    return 0


def print_summary(result: dict[str, Any], seconds: float) -> None:
    """The closing summary: counts per stage, metrics, model URI, how to open the UIs."""
    from brivl.manifest import read_manifest
    from brivl.report import print_table
    from tasks.tracking import ui_command

    data = result["data"]
    rows = []
    for stage in ("crawl", "download", "filter", "shard"):
        counts = read_manifest(data[f"{stage}_dir"])["row_counts"]
        rows.append({"stage": stage, **{k: v for k, v in counts.items() if isinstance(v, int)}})
    print_table("Rows per stage", [_compact(r) for r in rows])
    model = result.get("model")
    if model:
        metrics = {k: v for k, v in sorted(model["metrics"].items()) if isinstance(v, float)}
        print_table("Evaluation", metrics)
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
    extras: dict[str, Any] = {}
    if result.get("index_dir"):
        from brivl.retrieval.service import service_hint

        search, serve = service_hint(result["index_dir"]).splitlines()
        extras.update({"search": search.split(": ", 1)[1], "search service": serve.split(":  ", 1)[1]})
    extras.update({
        "prompt grid": result.get("prompt_grid", "-"),
        "Prefect UI": "make serve, then http://127.0.0.1:4200",
        "MLflow UI": ui_command(),
        "wall time": f"{seconds:.0f} s",
    })
    print_table("Next", extras)
    sys.stdout.flush()


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    keep = ["stage"] + [k for k in row if k != "stage"][:6]
    return {k: row[k] for k in keep}
