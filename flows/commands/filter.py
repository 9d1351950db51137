"""``brivl filter``: weak-correlation filtering of downloaded image-text pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.commands import checked

ORCHESTRATED = "served"  # a Prefect task only with a server configured (tasks.standalone)
HELP = ("filter image-text pairs: size, aspect, caption rules, blocklist, spam, language, faces, "
        "dedup, evaluation overlap, optional model score")

# CLI flag -> FilterConfig field (flags left unset keep the config's value)
FLAGS = {
    "min_side": "min_image_side",
    "max_aspect": "max_aspect_ratio",
    "min_chars": "min_caption_chars",
    "max_chars": "max_caption_chars",
    "min_words": "min_caption_words",
    "max_words": "max_caption_words",
    "near_dup_distance": "near_dup_max_distance",
    "max_identical_captions": "max_identical_captions",
    "model_score": "model_score",
    "score_threshold": "model_score_threshold",
    "score_top_fraction": "model_score_top_fraction",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True,
        help="download stage directory (img2dataset Parquet), or a folder of Parquet files with "
        "(candidate_id or key, url, caption, jpg)",
    )
    parser.add_argument("--out", help="output directory (default: $BRIVL_HOME/data/filter/<key>)")
    parser.add_argument("--config", help="JSON file of FilterConfig fields")
    parser.add_argument("--min-side", type=int, help="minimum shorter image side in pixels")
    parser.add_argument("--max-aspect", type=float, help="maximum long/short side ratio")
    parser.add_argument("--min-chars", type=int, help="minimum caption characters")
    parser.add_argument("--max-chars", type=int, help="maximum caption characters")
    parser.add_argument("--min-words", type=int, help="minimum caption words")
    parser.add_argument("--max-words", type=int, help="maximum caption words")
    parser.add_argument("--languages", help="comma-separated allowed languages, e.g. en,de "
                        "('' allows any)")
    parser.add_argument("--blocklist-file", help="file of blocklisted words, one a line "
                        "(replaces the default list)")
    parser.add_argument("--near-dup-distance", type=int,
                        help="pHash Hamming distance for near-duplicates (-1: off)")
    parser.add_argument("--max-identical-captions", type=int,
                        help="kept rows allowed per identical caption (0: no cap)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="any FilterConfig field, e.g. --set spam_min_words=5 (repeatable)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the per-row rules")
    parser.add_argument("--faces", choices=("blur", "drop", "off"),
                        help="detected faces: blurred in the stored JPEG (default), the pair "
                        "dropped, or no detection")
    parser.add_argument("--model-score", metavar="MODEL",
                        help="score pairs with this model (checkpoint dir, models:/brivl@champion, "
                        "or brivl-lite at step 0: random projections, scores mean little); "
                        "with --score-threshold or --score-top-fraction; off by default")
    parser.add_argument("--score-threshold", type=float, help="keep pairs scoring >= this")
    parser.add_argument("--score-top-fraction", type=float,
                        help="keep this best share of the scored pairs (0 < f <= 1)")
    parser.add_argument("--eval-sets", default="", metavar="DIR",
                        help="evaluation sets (a directory of them, or one): pairs showing one "
                        "of their images are rejected as eval_overlap")


def build_config(args: argparse.Namespace) -> dict:
    """FilterConfig fields from --config, the named flags and --set, in that order."""
    from brivl.config_parse import ConfigError, read_json_config
    from brivl.filter import FilterConfig

    values: dict = read_json_config(args.config) if args.config else {}
    for flag, field in FLAGS.items():
        if getattr(args, flag) is not None:
            values[field] = getattr(args, flag)
    if getattr(args, "faces", None):
        values["face_policy"] = args.faces
    if args.languages is not None:
        values["languages"] = [c.strip() for c in args.languages.split(",") if c.strip()]
    if args.blocklist_file:
        lines = Path(args.blocklist_file).read_text().splitlines()
        values["blocklist"] = [w.strip() for w in lines if w.strip() and not w.startswith("#")]
    for item in args.set:
        field, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        try:
            values[field.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[field.strip()] = raw
    return FilterConfig.from_dict(values).to_dict()


def check(args: argparse.Namespace) -> dict:
    """The normalised filter config (before any setup)."""
    return build_config(args)


def run(args: argparse.Namespace) -> int:
    from brivl.filter import REPORT_NAME, summary_rows
    from brivl.report import print_table
    from tasks.filter import filter_task
    from tasks.standalone import call_stage

    config = checked(args, check)
    if args.eval_sets:
        from flows.checks import check_eval_sets

        check_eval_sets(args.eval_sets)
    out_dir = call_stage(filter_task, args.input, config, args.out, workers=args.workers,
                          eval_sets=args.eval_sets or None)
    report = json.loads((Path(out_dir) / REPORT_NAME).read_text())
    print_table(f"filter: {out_dir}", summary_rows(report))
    print(out_dir)
    return 0
