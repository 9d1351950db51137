"""Interpretation speed on CPU: seconds per 100 optimisation steps of Algorithms 1 and 2.

For each model (brivl-tiny; brivl-lite unless --no-lite) it times, in the same run:
the baseline — one forward + backward of the image tower on the batch every step embeds
(the un-augmented image + ``n_views`` augmented views) — then Algorithm 1 (``visualize``,
Fourier parameterisation) and Algorithm 2 (``generate`` through an untrained default
``VQGenerator``, 64 px), and the generator's own training. Weights do not change the cost,
so the models are untrained (no pretrained files are read). Results replace this
benchmark's section of bench/RESULTS.md.

    .venv/bin/python bench/interpret.py [--steps 100] [--lite-steps 20] [--threads 1] [--no-lite]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import replace_section  # noqa: E402
from brivl.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

from brivl.interpret import (  # noqa: E402
    TextToImageConfig,
    VisualizeConfig,
    VQGenerator,
    VQGeneratorConfig,
    generate,
    train_generator,
    visualize,
)
from brivl.interpret.common import ViewAugmentConfig, frozen  # noqa: E402
from brivl.model import create_model  # noqa: E402
from brivl.model.tokenizer import train_tokenizer  # noqa: E402

SECTION = "## Interpretation (issue 8)"
CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"] * 4


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "brivl-tiny":
        tokenizer = train_tokenizer(CAPTIONS, vocab_size=100, min_frequency=1)
        return create_model(name, tokenizer=tokenizer, pretrained=False).eval()
    return create_model(name, pretrained=False).eval()


def per_100(fn, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - start) / steps * 100


def baseline(model: torch.nn.Module, views: int, steps: int) -> float:
    size = model.config.image_size
    pixels = torch.rand(1 + views, 3, size, size, requires_grad=True)

    def run(n: int) -> None:
        with frozen(model):
            for _ in range(n):
                model.encode_image(pixels).sum().backward()
                pixels.grad = None

    run(1)  # warm-up
    return per_100(run, steps)


def bench_model(name: str, steps: int, views: int) -> list[dict]:
    model = build(name)
    size = model.config.image_size
    augment = ViewAugmentConfig(n_views=views)
    generator = VQGenerator(VQGeneratorConfig()).eval()
    base = baseline(model, views, steps)
    vis = per_100(
        lambda n: visualize(model, "a red circle", VisualizeConfig(steps=n, augment=augment)), steps
    )
    gen = per_100(
        lambda n: generate(
            model, generator, "a red circle", TextToImageConfig(steps=n, augment=augment)
        ),
        steps,
    )
    rows = [
        ("baseline: image tower fwd+bwd", base),
        ("Algorithm 1 visualize (Fourier)", vis),
        ("Algorithm 2 generate (VQ latent)", gen),
    ]
    return [
        {
            "model": f"{name} ({size} px)",
            "what": what,
            "s_per_100": s,
            "ratio": s / base,
            "steps": steps,
        }
        for what, s in rows
    ]


def bench_generator_training(steps: int) -> dict:
    config = VQGeneratorConfig(steps=steps)
    images = [torch.rand(3, config.image_size, config.image_size) for _ in range(64)]
    start = time.perf_counter()
    train_generator(images, config)
    seconds = (time.perf_counter() - start) / steps * 100
    return {
        "model": f"VQGenerator ({config.image_size} px, batch {config.batch_size})",
        "what": "generator training",
        "s_per_100": seconds,
        "ratio": float("nan"),
        "steps": steps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps timed for brivl-tiny")
    parser.add_argument("--lite-steps", type=int, default=20, help="steps timed for brivl-lite")
    parser.add_argument("--views", type=int, default=4, help="augmented views per step")
    parser.add_argument("--train-steps", type=int, default=20, help="generator training steps")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared box)"
    )
    parser.add_argument("--no-lite", action="store_true", help="skip brivl-lite")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = bench_model("brivl-tiny", args.steps, args.views)
    if not args.no_lite:
        rows += bench_model("brivl-lite", args.lite_steps, args.views)
    rows.append(bench_generator_training(args.train_steps))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"CPU only, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"1-min load average at the end {load:.1f} (shared machine: absolute numbers move with "
        f"load, the ratios less). Each step embeds 1 + {args.views} views. Ratio = time / "
        "baseline of the same model in the same run.",
        "",
        "| model | what | steps timed | s per 100 steps | ratio to baseline |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['model']} | {r['what']} | {r['steps']} | {r['s_per_100']:.1f} | {ratio} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        replace_section(SECTION, "python bench/interpret.py", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
