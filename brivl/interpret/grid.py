"""The prompt grid: for each prompt, what Algorithm 1 and Algorithm 2 make of it.

One row per prompt, one column per method; each cell is captioned with the final cosine
similarity to its prompt. The summary also holds the full similarity matrix of every
image against every prompt, which says whether each picture is closest to its own prompt,
and, for prompts that name a colour, whether that colour is among the picture's main
colours (:func:`brivl.colours.colour_names`, the names the demo site tags pictures with).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from brivl.colours import COLOUR_NAMES, colour_names
from brivl.interpret.common import EmbeddingModel, image_text_similarity
from brivl.interpret.generate import Generator, TextToImageConfig, generate
from brivl.interpret.visualize import VisualizeConfig, visualize
from brivl.report import track

LABEL_HEIGHT = 14
PAD = 4


def render_prompt_grid(
    model: EmbeddingModel,
    generator: Generator | None,
    prompts: Sequence[str],
    visualize_config: VisualizeConfig | None = None,
    generate_config: TextToImageConfig | None = None,
    cell: int = 128,
) -> tuple[Image.Image, dict[str, Any]]:
    """Run both algorithms for every prompt; return the grid image and a JSON-able summary."""
    if not prompts:
        raise ValueError("render_prompt_grid: no prompts given; pass at least one text")
    methods = ["visualize"] + (["generate"] if generator is not None else [])
    rows: list[list[Image.Image]] = []
    summary: dict[str, Any] = {"prompts": list(prompts), "methods": methods, "results": []}
    for prompt in track(list(prompts), "prompt grid"):
        vis = visualize(model, prompt, visualize_config)
        images = [vis.image]
        entry = {"prompt": prompt, "visualize": _trace_summary(vis.trace)}
        if generator is not None:
            gen = generate(model, generator, prompt, generate_config)
            images.append(gen.image)
            entry["generate"] = _trace_summary(gen.trace)
        rows.append(images)
        summary["results"].append(entry)
    for col, method in enumerate(methods):
        sims = image_text_similarity(model, [row[col] for row in rows], list(prompts))
        summary[f"{method}_similarity_matrix"] = [[round(float(v), 4) for v in r] for r in sims]
        summary[f"{method}_own_prompt_is_best"] = [
            int(sims[i].argmax()) == i for i in range(len(prompts))
        ]
        summary[f"{method}_colours"] = [list(colour_names(row[col], limit=3)) for row in rows]
        summary[f"{method}_colour_match"] = [
            colour_match(prompt, colours)
            for prompt, colours in zip(prompts, summary[f"{method}_colours"], strict=True)
        ]
    labels = [
        [f"{m} {summary['results'][i][m]['final']:+.2f}" for m in methods] for i in range(len(rows))
    ]
    return compose_grid(list(prompts), rows, labels, cell), summary


def grid_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per prompt: for each method its similarity to the prompt, whether the
    prompt is the image's best match among all prompts, and the image's main colours
    (marked ✓ when they include a colour the prompt names)."""
    rows = []
    for i, result in enumerate(summary["results"]):
        row: dict[str, Any] = {"prompt": result["prompt"]}
        for method in summary["methods"]:
            best = summary[f"{method}_own_prompt_is_best"][i]
            colours = "/".join(summary[f"{method}_colours"][i]) or "none"
            match = summary[f"{method}_colour_match"][i]
            mark = "" if match is None else (" ✓" if match else " ✗")
            row[method] = (f"{result[method]['final']:+.2f}, {'best' if best else 'not best'}"
                           f" of {len(summary['results'])}, {colours}{mark}")
        rows.append(row)
    return rows


def grid_scores(summary: dict[str, Any]) -> dict[str, float]:
    """Per method: share of images closest to their own prompt, and share of colour-naming
    prompts whose colour the image shows."""
    scores = {}
    for method in summary["methods"]:
        best = summary[f"{method}_own_prompt_is_best"]
        scores[f"{method}.own_prompt_best_share"] = sum(best) / len(best)
        matches = [m for m in summary[f"{method}_colour_match"] if m is not None]
        if matches:
            scores[f"{method}.colour_match_share"] = sum(matches) / len(matches)
    return scores


def prompt_colours(prompt: str) -> list[str]:
    """The colour names a prompt mentions (``"a red apple"`` -> ``["red"]``)."""
    words = prompt.lower().replace(",", " ").split()
    return [w for w in words if w in COLOUR_NAMES]


def colour_match(prompt: str, colours: Sequence[str]) -> bool | None:
    """Whether a colour the prompt names is among the image's main colours; None when the
    prompt names none."""
    wanted = prompt_colours(prompt)
    return any(c in colours for c in wanted) if wanted else None


def _trace_summary(trace: list[float]) -> dict[str, float]:
    return {"initial": round(trace[0], 4), "final": round(trace[-1], 4), "steps": len(trace) - 1}


def compose_grid(
    row_titles: Sequence[str],
    rows: Sequence[Sequence[Image.Image]],
    cell_labels: Sequence[Sequence[str]],
    cell: int = 128,
) -> Image.Image:
    """Lay images out in rows of ``cell``-pixel squares, a title above each row."""
    n_cols = max(len(r) for r in rows)
    width = PAD + n_cols * (cell + PAD)
    row_height = LABEL_HEIGHT + cell + LABEL_HEIGHT + PAD
    canvas = Image.new("RGB", (width, PAD + len(rows) * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, (title, images) in enumerate(zip(row_titles, rows, strict=True)):
        top = PAD + r * row_height
        draw.text((PAD, top), _fit(title, width - 2 * PAD), fill=(0, 0, 0), font=font)
        for c, image in enumerate(images):
            left = PAD + c * (cell + PAD)
            canvas.paste(
                image.convert("RGB").resize((cell, cell), Image.BICUBIC), (left, top + LABEL_HEIGHT)
            )
            label = cell_labels[r][c] if c < len(cell_labels[r]) else ""
            draw.text((left, top + LABEL_HEIGHT + cell + 1), label, fill=(60, 60, 60), font=font)
    return canvas


def _fit(text: str, width: int, char_px: int = 6) -> str:
    limit = max(4, width // char_px)
    return text if len(text) <= limit else text[: limit - 1] + "…"
