"""Held-out eval sets emitted by the demo web's generator.

Every picture here uses an (object, colour) pair that never appears on the site
(:attr:`DemoSite.heldout_pairs`), so the sets measure generalisation to unseen attribute
combinations. Files written to ``out_dir`` (plus ``_manifest.json``, written last):

- ``zeroshot_images.parquet``: ``image`` (JPEG bytes), ``label`` (object name), attribute columns
- ``retrieval.parquet``: ``image``, ``captions`` (list of 5 phrasings), attribute columns
- ``zeroshot_text.parquet``: ``text`` (a news-like sentence), ``label`` (topic name)
- ``vqa.parquet``: ``image``, ``question``, ``choices`` (4 strings), ``answer`` (index),
  ``attribute`` (what the question asks about), ``split`` (train/test, alternating),
  attribute columns
- ``classes.json``: ``{set name: {"classes": [...], "templates": [...]}}`` for
  ``zeroshot_images`` (object names, prompt templates) and ``zeroshot_text`` (topic names)
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from brivl.demo import render, vocab
from brivl.demo.site_config import DemoConfig
from brivl.fingerprint import code_version
from brivl.manifest import write_manifest

PROMPT_TEMPLATES = ("a picture of a {}", "a {} shape", "one or more {} shapes", "a drawing of a {}")
QUESTIONS = {
    "object": "Which shape is shown?",
    "colour": "What colour are the shapes?",
    "count": "How many shapes are there?",
    "position": "Where in the picture are the shapes?",
    "texture": "What pattern fills the shapes?",
    "background": "What is the background like?",
}
ANSWER_WORDS = {
    "count": {1: "one", 2: "two", 3: "three", 4: "four"},
    "position": {p: vocab.POSITION_PHRASES[p][0] for p in vocab.POSITIONS},
    "background": {b: vocab.BACKGROUND_PHRASES[b][0][2:] for b in vocab.BACKGROUNDS},
}
ATTRIBUTE_FIELDS = [
    ("object", pa.string()),
    ("colour", pa.string()),
    ("count", pa.int64()),
    ("position", pa.string()),
    ("texture", pa.string()),
    ("background", pa.string()),
]


def write_eval_sets(
    config: DemoConfig,
    heldout_pairs: Iterable[tuple[str, str]],
    out_dir: str | Path,
    *,
    n_zeroshot: int = 200,
    n_retrieval: int = 100,
    n_text: int = 200,
    n_vqa: int = 200,
) -> dict[str, Path]:
    """Write the four eval sets and ``classes.json`` into ``out_dir``; return name → path.

    ``config`` is the site's, ``heldout_pairs`` the (object, colour) pairs kept off it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heldout = sorted(heldout_pairs)
    gen = _Generator(config, heldout)
    tables = {
        "zeroshot_images": gen.zeroshot_images(n_zeroshot),
        "retrieval": gen.retrieval(n_retrieval),
        "zeroshot_text": gen.zeroshot_text(n_text),
        "vqa": gen.vqa(n_vqa),
    }
    paths: dict[str, Path] = {}
    for name, table in tables.items():
        paths[name] = out / f"{name}.parquet"
        pq.write_table(table, paths[name])
    paths["classes"] = out / "classes.json"
    paths["classes"].write_text(
        json.dumps(
            {
                "zeroshot_images": {
                    "classes": list(vocab.OBJECTS),
                    "templates": list(PROMPT_TEMPLATES),
                },
                "zeroshot_text": {"classes": list(vocab.TOPICS)},
            },
            indent=2,
        )
    )
    sizes = {"n_zeroshot": n_zeroshot, "n_retrieval": n_retrieval, "n_text": n_text, "n_vqa": n_vqa}
    write_manifest(
        out,
        stage="demo_eval_sets",
        config={"site": dataclasses.asdict(config), **sizes},
        inputs=[],
        code_version=code_version("brivl.demo"),
        row_counts={name: table.num_rows for name, table in tables.items()},
        extra={"heldout_pairs": [list(pair) for pair in heldout]},
    )
    return paths


class _Generator:
    def __init__(self, config: DemoConfig, heldout: list[tuple[str, str]]) -> None:
        self.config = config
        self.rng = random.Random(f"brivl-demo-eval:{config.seed}")
        self.heldout = heldout
        self.by_object: dict[str, list[str]] = {}
        for obj, colour in self.heldout:
            self.by_object.setdefault(obj, []).append(colour)
        self.counter = 0

    def _labels(self, obj: str | None = None) -> dict:
        rng = self.rng
        if obj is None:
            obj, colour = rng.choice(self.heldout)
        else:
            colour = rng.choice(self.by_object[obj])
        return {
            "object": obj,
            "colour": colour,
            "count": rng.choice(vocab.COUNTS),
            "position": rng.choice(vocab.POSITIONS),
            "texture": rng.choice(vocab.TEXTURES),
            "background": rng.choice(vocab.BACKGROUNDS),
        }

    def _picture(self, labels: dict) -> bytes:
        self.counter += 1
        cfg, rng = self.config, self.rng
        width, height = (
            rng.randint(cfg.min_side, cfg.max_side),
            rng.randint(cfg.min_side, cfg.max_side),
        )
        seed = [cfg.seed & 0xFFFFFFFF, 1 << 30, self.counter]  # disjoint from the site's seeds
        return render.jpeg(render.render(labels, width, height, seed), 88)

    def _image_rows(self, n: int, balanced: bool) -> list[tuple[dict, bytes]]:
        objects = [vocab.OBJECTS[i % len(vocab.OBJECTS)] if balanced else None for i in range(n)]
        rows = []
        for obj in objects:
            labels = self._labels(obj)
            rows.append((labels, self._picture(labels)))
        return rows

    def zeroshot_images(self, n: int) -> pa.Table:
        rows = self._image_rows(n, balanced=True)
        return _table(rows, {"label": ([lab["object"] for lab, _ in rows], pa.string())})

    def retrieval(self, n: int) -> pa.Table:
        rows = self._image_rows(n, balanced=False)
        captions = [[vocab.describe(lab, self.rng, style) for style in range(5)] for lab, _ in rows]
        return _table(rows, {"captions": (captions, pa.list_(pa.string()))})

    def zeroshot_text(self, n: int) -> pa.Table:
        topics = list(vocab.TOPICS)
        labels = [topics[i % len(topics)] for i in range(n)]
        texts = [vocab.news_text(topic, self.rng) for topic in labels]
        return pa.table(
            {"text": pa.array(texts, pa.string()), "label": pa.array(labels, pa.string())}
        )

    def vqa(self, n: int) -> pa.Table:
        rows = self._image_rows(n, balanced=False)
        attributes = [vocab.ATTRIBUTES[i % len(vocab.ATTRIBUTES)] for i in range(n)]
        questions, choices, answers = [], [], []
        for (labels, _), attribute in zip(rows, attributes, strict=True):
            words = ANSWER_WORDS.get(attribute, {})
            options = [words.get(v, v) for v in vocab.CHOICES[attribute]]
            right = words.get(labels[attribute], labels[attribute])
            picked = [right, *self.rng.sample([o for o in options if o != right], 3)]
            self.rng.shuffle(picked)
            questions.append(QUESTIONS[attribute])
            choices.append(picked)
            answers.append(picked.index(right))
        return _table(
            rows,
            {
                "question": (questions, pa.string()),
                "choices": (choices, pa.list_(pa.string())),
                "answer": (answers, pa.int64()),
                "attribute": (attributes, pa.string()),
                "split": (["test" if i % 2 else "train" for i in range(n)], pa.string()),
            },
        )


def _table(
    rows: list[tuple[dict, bytes]], columns: dict[str, tuple[list, pa.DataType]]
) -> pa.Table:
    data = {"image": pa.array([img for _, img in rows], pa.binary())}
    for name, (values, dtype) in columns.items():
        data[name] = pa.array(values, dtype)
    for name, dtype in ATTRIBUTE_FIELDS:
        data[name] = pa.array([labels[name] for labels, _ in rows], dtype)
    return pa.table(data)
