"""``brivl generate "text"``: Algorithm 2 — text-to-image through a trained generator, as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.commands.visualize import add_common, common_values, finish, load_or_fail

HELP = "optimise a generator's latent so its image matches a text (Algorithm 2); write a PNG"
ORCHESTRATED = False  # runs no Prefect flow or task: its database is not prepared


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "TextToImageConfig")
    parser.add_argument(
        "--generator", type=Path, required=True, help="generator directory (the generator stage)"
    )
    parser.add_argument(
        "--snap", action="store_true", help="snap the latent to the codebook at every step"
    )


def run(args: argparse.Namespace) -> int:
    from brivl.interpret.generate import TextToImageConfig, generate
    from brivl.interpret.vqgan import load_generator

    values = common_values(args)
    if args.snap:
        values["snap_to_codebook"] = True
    config = TextToImageConfig.from_dict(values)  # checked before the model loads
    model = load_or_fail(args.model)
    if model is None:
        return 2
    try:
        generator = load_generator(args.generator)
    except (FileNotFoundError, ValueError) as exc:
        print(f"brivl generate: {exc}", file=sys.stderr)
        return 2
    result = generate(model, generator, args.text, config)  # type: ignore[arg-type]
    return finish(result.image, result.trace, args.out, f"generate {args.text!r}")
