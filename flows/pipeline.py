"""The whole DAG: data (crawl → download → filter → shard) → retrain (pretrain → evaluate →
register) → index (clip-retrieval) → interpret (generator + prompt grid).

One MLflow parent run per pipeline run; each stage is a child run of it (``tasks.stage``: the
stage's normalised config as params, its manifest's counts as metrics). Every stage is a
cached Prefect task, so a rerun with nothing changed does no stage work.
"""

from __future__ import annotations

import copy
from typing import Any

from brivl.env import apply_defaults

apply_defaults()

from prefect import flow  # noqa: E402

from brivl.crawl.seeds import check_seeds  # noqa: E402
from brivl.errors import ConfigError  # noqa: E402
from flows.checks import STAGES, check_pipeline_config  # noqa: E402
from flows.data import data_flow  # noqa: E402
from flows.retrain import DEFAULT_PRIMARY_METRIC, retrain_flow  # noqa: E402
from flows.runs import pipeline_run  # noqa: E402
from tasks import tracking  # noqa: E402
from tasks.index import index_task  # noqa: E402
from tasks.interpret import prompt_grid_task, train_generator_task  # noqa: E402

DEFAULT_PROMPTS = [  # things the demo web's clip art shows, in plain words, each with a colour
    "a red apple",
    "a yellow star",
    "a green tree",
    "a blue car",
    "a black cat",
]

# brivl-lite (pretrained EfficientNet-Lite0 + MiniLM) sized for a few CPU minutes: 128 px; the
# pretrained towers frozen and their outputs cached (no pixel augmentation), so the steps train
# BriVL's own layers (patch pooling + patch Transformer, token layer, MLP heads), identity-
# initialised, with in-batch negatives and the queue. On 2 cores, unfreezing backbone stages
# cost more steps than it gained at equal time (bench/RESULTS.md, "Real-corpus training").
CPU_TRAIN: dict[str, Any] = {
    "model": "brivl-lite",
    "model_overrides": {
        "image_size": 128,
        "in_batch_negatives": True,
        "image": {"frozen_stages": 7, "identity_init": True, "patch_layers": 1, "patch_ffn": 512},
        "text": {"frozen_layers": 6, "identity_init": True, "token_layers": 1, "token_ffn": 768},
    },
    "steps": 400,
    "batch_size": 32,
    "checkpoint_every": 200,  # a brivl-lite checkpoint is ~250 MB: keep the saves few
    "lr": 1e-3,
    "min_lr": 1e-5,
    "trunk_cache": True,
    "augment": {"enabled": False},
    # cpu_bf16 stays "auto": bf16 autocast only on CPUs with bf16 instructions
}

DEFAULT_CONFIG: dict[str, Any] = {
    "crawl": {},
    "download": {},
    "filter": {},
    "shard": {},
    "train": dict(CPU_TRAIN),
    "eval_sets": "",  # a directory of eval sets (Parquet, CSV, ImageFolder, webdataset), or {name: path}
    "eval": {},
    "baselines": {"step0": True, "frozen_towers": True},  # evaluated beside the trained model
    "index": {},
    # CPU-sized (~15 s on 2 cores): L1 (foreground-weighted) + colour + VQ losses, no
    # perceptual features (they cost 3x per step); raise steps and channels on a GPU. lr 3e-3:
    # at 1e-2 the colours of held-out reconstructions collapsed to a yellow/black palette
    "generator": {"steps": 120, "lr": 0.003, "perceptual_weight": 0.0},
    # each step backpropagates 1 + n_views images through the image tower (~4 s a prompt and
    # algorithm on 2 cores). Algorithm 1 paints flat-coloured ellipses on white (the "shapes"
    # parameterisation): on this small model, Fourier pixels turn into texture, shapes show
    # the prompt's colour and rough extent. lr 0.2 (default 0.05): at 0.05 the half-
    # transparent ellipses stayed pale and mixed to grey (prompt colour 3 of 5 and 3 of 8 on
    # eight other prompts; 0.2: 3-4 of 5 and 5 of 8, own prompt best 4 of 5, bench/RESULTS.md)
    # Algorithm 2 starts from the generator's latent of a white canvas (clip art's
    # background) and moves a 4 x 4 offset grid upsampled onto the latent: free per-cell codes
    # gave a patchwork of every colour (prompt colour 2 of 5; 5 of 5 this way, and 4-6 of 8
    # on eight other prompts against 3 of 8, bench/RESULTS.md)
    "grid": {"visualize": {"param": "shapes", "steps": 56, "lr": 0.2, "tv_weight": 0.0,
                           "augment": {"n_views": 2}},
             "generate": {"steps": 40, "lr": 0.5, "init": "white", "init_noise": 1.0,
                          "latent_cells": 4, "augment": {"n_views": 2}}},
    "prompts": DEFAULT_PROMPTS,
    "model_name": "brivl",
    "primary_metric": DEFAULT_PRIMARY_METRIC,
    "stages": list(STAGES),
}


def merged_config(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_CONFIG with ``overrides`` merged in one level deep (per stage section)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in (overrides or {}).items():
        if key not in config:
            raise ConfigError(f"unknown pipeline config section {key!r}; accepted: {sorted(config)}")
        if isinstance(config[key], dict) and value is not None and not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} is not accepted; accepted: an object of {key} "
                              "settings")
        if isinstance(config[key], dict) and isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    train = (overrides or {}).get("train") or {}
    if train.get("model", CPU_TRAIN["model"]) != CPU_TRAIN["model"]:
        # another model: CPU_TRAIN's model overrides are brivl-lite's, not its
        config["train"]["model_overrides"] = train.get("model_overrides", {})
    return config


@flow(name="brivl-pipeline")
def pipeline_flow(seeds: list[str], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the whole DAG from seed URLs; returns stage outputs, counts, metrics, model URI.

    Every section is checked before the first stage starts."""
    cfg = merged_config(config)
    check_pipeline_config(cfg)
    check_seeds(seeds)
    out: dict[str, Any] = {"seeds": seeds}
    with pipeline_run("pipeline", {"seeds": " ".join(seeds)}) as run_id:
        out["mlflow_run_id"] = run_id
        out["mlflow_experiment_id"] = tracking.ensure_experiment()
        data = data_flow(seeds, cfg["crawl"], cfg["download"], cfg["filter"], cfg["shard"],
                         eval_sets=cfg["eval_sets"] or None)
        out["data"] = data
        if "retrain" not in cfg["stages"]:
            return out
        model = retrain_flow(
            data["shard_dir"], cfg["train"], cfg["eval_sets"], cfg["eval"],
            cfg["model_name"], cfg["primary_metric"], cfg["baselines"],
        )
        out["model"] = model
        if "index" in cfg["stages"]:
            out["index_dir"] = index_task(model["checkpoint"], data["shard_dir"], cfg["index"])
        if "interpret" in cfg["stages"]:
            generator = train_generator_task(data["shard_dir"], cfg["generator"])
            out["generator_dir"] = generator
            out["prompt_grid"] = prompt_grid_task(
                model["checkpoint"], generator, cfg["prompts"], cfg["grid"]
            )
    return out
