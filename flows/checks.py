"""Every stage's config checked before any stage runs.

A bad train setting used to fail only after the crawl and a 159 s download: the flows and
the CLI call these first, so the first stage starts only when every section parses. They
check and raise (:class:`~brivl.errors.ConfigError` naming the section and field); the
stages still receive the configs as given and normalise them themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from brivl.errors import ConfigError

STAGES = ("data", "retrain", "index", "interpret")  # what ``--stages`` may name


def check_stages(stages: Any) -> list[str]:
    """The pipeline's stage list; an unknown name is refused, listing the accepted ones."""
    if isinstance(stages, str) or not isinstance(stages, Sequence):
        raise ConfigError(f"stages: {stages!r} is not accepted; accepted: a list among "
                          f"{', '.join(STAGES)}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ConfigError(f"stages: {unknown or 'none'} not accepted; accepted: a comma list "
                          f"among {', '.join(STAGES)}")
    return list(stages)


def check_data_configs(crawl: Any, download: Any, filter_: Any, shard: Any) -> None:
    """The data flow's four sections."""
    from brivl.crawl import CrawlConfig
    from brivl.download import DownloadConfig
    from brivl.filter import FilterConfig
    from brivl.shard import ShardConfig

    CrawlConfig.from_dict(crawl)
    DownloadConfig.from_dict(download)
    FilterConfig.from_dict(filter_)
    ShardConfig.from_dict(shard)


def check_pipeline_config(cfg: Mapping[str, Any]) -> None:
    """Every section of a merged pipeline config (see ``flows.pipeline.DEFAULT_CONFIG``)."""
    from brivl.evaluate.runner import EvalConfig
    from brivl.interpret.generate import TextToImageConfig
    from brivl.interpret.visualize import VisualizeConfig
    from brivl.interpret.vqgan import VQGeneratorConfig
    from brivl.retrieval.build import IndexConfig
    from brivl.train import PretrainConfig
    from brivl.train.baselines import frozen_towers_config

    stages = check_stages(cfg["stages"])
    check_data_configs(cfg["crawl"], cfg["download"], cfg["filter"], cfg["shard"])
    if "retrain" in stages:
        PretrainConfig.from_dict(cfg["train"])
        EvalConfig.from_dict(cfg["eval"])
        _check_baselines(cfg["baselines"], cfg["train"], frozen_towers_config, PretrainConfig)
        if cfg["eval_sets"]:
            _check_eval_sets(cfg["eval_sets"])
    if "index" in stages:
        IndexConfig.from_dict(cfg["index"])
    if "interpret" in stages:
        VQGeneratorConfig.from_dict(cfg["generator"])
        grid = _section(cfg["grid"], "grid", ("visualize", "generate", "cell"))
        VisualizeConfig.from_dict(grid.get("visualize"))
        TextToImageConfig.from_dict(grid.get("generate"))
        cell = grid.get("cell", 128)
        if isinstance(cell, bool) or not isinstance(cell, int) or not 16 <= cell <= 2048:
            raise ConfigError(f"grid.cell: {cell!r} is not accepted; accepted: an integer from "
                              "16 to 2048 (pixels per grid cell)")
        _check_prompts(cfg["prompts"])


def _section(value: Any, name: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: {value!r} is not accepted; accepted: an object with keys "
                          f"{', '.join(keys)}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; accepted: {list(keys)}")
    return value


def _check_baselines(value: Any, train: Any, frozen_config, config_cls) -> None:
    baselines = _section(value, "baselines", ("step0", "frozen_towers"))
    if not isinstance(baselines.get("step0", True), bool):
        raise ConfigError(f"baselines.step0: {baselines['step0']!r} is not accepted; accepted: "
                          "true or false")
    frozen = baselines.get("frozen_towers", True)
    if isinstance(frozen, Mapping):
        config_cls.from_dict(frozen_config(dict(train), 60.0, dict(frozen)))
    elif not isinstance(frozen, bool):
        raise ConfigError(f"baselines.frozen_towers: {frozen!r} is not accepted; accepted: true, "
                          "false or an object of PretrainConfig overrides")


def _check_eval_sets(value: Any) -> None:
    from brivl.evaluate.runner import resolve_sets

    if not isinstance(value, (str, Mapping)):
        raise ConfigError(f"eval_sets: {value!r} is not accepted; accepted: a path or an object "
                          "{name: path}")
    sets = resolve_sets(value)
    missing = {name: str(path) for name, path in sets.items() if not path.exists()}
    if missing or not sets:
        raise ConfigError(f"eval_sets: {missing or value!r} not found; accepted: a directory of "
                          "eval sets, one set, or {name: path} of existing sets")


check_eval_sets = _check_eval_sets  # for the commands that take --eval-sets


def _check_prompts(prompts: Any) -> None:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts or not all(
            isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError(f"prompts: {prompts!r} is not accepted; accepted: a non-empty list of "
                          "non-empty strings")
