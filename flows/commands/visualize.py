"""``brivl visualize "text"``: Algorithm 1 — the image a model "imagines" for a text, as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "optimise an image so the model embeds it close to a text (Algorithm 1); write a PNG"


def add_common(parser: argparse.ArgumentParser, steps: int) -> None:
    """Arguments shared by ``visualize`` and ``generate``."""
    parser.add_argument("text", help="the text to visualise")
    parser.add_argument("--model", required=True, help="checkpoint directory or model URI")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument(
        "--steps", type=int, default=steps, help=f"optimisation steps (default {steps})"
    )
    parser.add_argument("--size", type=int, default=None, help="output side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    parser.add_argument("--views", type=int, default=4, help="augmented views per step (default 4)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, steps=256)
    parser.add_argument(
        "--param", choices=["fourier", "pixel"], default="fourier", help="image parameterisation"
    )
    parser.add_argument(
        "--tv", type=float, default=0.05, help="total-variation weight (default 0.05)"
    )


def load_or_fail(ref: str) -> object | None:
    """The model, or ``None`` after printing why it could not be loaded."""
    from brivl.interpret.loading import load_model

    try:
        return load_model(ref)
    except (FileNotFoundError, ValueError) as exc:
        print(f"brivl: cannot load model {ref!r}: {exc}", file=sys.stderr)
        return None


def finish(image: object, trace: list[float], out: Path, label: str) -> int:
    """Save the PNG, print the path and a one-row summary."""
    from brivl.report import print_table

    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")  # type: ignore[attr-defined]
    print_table(
        label, {"similarity_initial": trace[0], "similarity_final": trace[-1], "out": str(out)}
    )
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    from brivl.interpret.common import AugmentConfig
    from brivl.interpret.visualize import VisualizeConfig, visualize

    model = load_or_fail(args.model)
    if model is None:
        return 2
    config = VisualizeConfig(
        steps=args.steps,
        size=args.size,
        lr=args.lr,
        seed=args.seed,
        param=args.param,
        tv_weight=args.tv,
        augment=AugmentConfig(n_views=args.views),
    )
    result = visualize(model, args.text, config)  # type: ignore[arg-type]
    return finish(result.image, result.trace, args.out, f"visualize {args.text!r}")
