"""``brivl visualize "text"``: Algorithm 1 — the image a model "imagines" for a text, as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "optimise an image so the model embeds it close to a text (Algorithm 1); write a PNG"
ORCHESTRATED = False  # runs no Prefect flow or task: its database is not prepared


def add_common(parser: argparse.ArgumentParser, config: str) -> None:
    """Arguments shared by ``visualize`` and ``generate``; a flag left out keeps ``config``'s
    default (each default is defined once, in that dataclass)."""
    parser.add_argument("text", help="the text to visualise")
    parser.add_argument("--model", required=True, help="checkpoint directory or model URI")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--steps", type=int, help=f"optimisation steps (default: {config}'s)")
    parser.add_argument("--size", type=int, help="output side in pixels (default: the model's)")
    parser.add_argument("--seed", type=int, help=f"random seed (default: {config}'s)")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default: {config}'s)")
    parser.add_argument("--views", type=int, help="augmented views per step (default: "
                        "ViewAugmentConfig's)")


def common_values(args: argparse.Namespace) -> dict:
    """The config fields the shared flags set (flags left out are not set)."""
    values = {k: getattr(args, k) for k in ("steps", "size", "seed", "lr")
              if getattr(args, k) is not None}
    if args.views is not None:
        values["augment"] = {"n_views": args.views}
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "VisualizeConfig")
    parser.add_argument("--param", choices=["fourier", "pixel", "shapes"], help="image parameterisation: "
                        "fourier (default, the paper's), pixel, or shapes (flat-coloured "
                        "ellipses on white; pass --tv 0)")
    parser.add_argument("--tv", type=float, help="total-variation weight (default: "
                        "VisualizeConfig's)")


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
    from brivl.interpret.visualize import VisualizeConfig, visualize

    values = common_values(args)
    values.update({k: v for k, v in (("param", args.param), ("tv_weight", args.tv))
                   if v is not None})
    config = VisualizeConfig.from_dict(values)  # checked before the model loads
    model = load_or_fail(args.model)
    if model is None:
        return 2
    result = visualize(model, args.text, config)  # type: ignore[arg-type]
    return finish(result.image, result.trace, args.out, f"visualize {args.text!r}")
