"""The shared config parser: types checked at the boundary, limits stated, fields named."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from brivl.config_parse import ConfigError, bounded, config_from_dict, read_json_config
from brivl.crawl import CrawlConfig
from brivl.download import DownloadConfig
from brivl.evaluate.runner import EvalConfig
from brivl.filter import FilterConfig
from brivl.interpret.generate import TextToImageConfig
from brivl.interpret.visualize import VisualizeConfig
from brivl.interpret.vqgan import VQGeneratorConfig
from brivl.model.config import BriVLConfig
from brivl.retrieval.build import IndexConfig
from brivl.shard import ShardConfig
from brivl.train import PretrainConfig, TrainConfig


@dataclass
class Inner:
    rate: float = bounded(0.5, min=0, max=1)


@dataclass
class Outer:
    count: int = bounded(3, min=1, max=10)
    flag: bool = False
    pair: tuple[float, float] = (0.1, 0.2)
    maybe: int | None = None
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_values_are_converted_to_the_declared_types():
    cfg = config_from_dict(Outer, {"count": 4.0, "pair": [1, 2], "maybe": 7, "names": ("a",),
                                   "inner": {"rate": 1}})
    assert cfg == Outer(count=4, pair=(1.0, 2.0), maybe=7, names=["a"], inner=Inner(rate=1.0))
    assert isinstance(cfg.count, int) and isinstance(cfg.inner.rate, float)
    assert config_from_dict(Outer, None) == Outer()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"count": "ten"}, r"^sec\.count: 'ten' is not accepted; accepted: an integer from 1 to 10$"),
        ({"count": True}, r"^sec\.count: True is not accepted; accepted: an integer from 1 to 10$"),
        ({"count": 2.5}, r"^sec\.count: 2\.5 is not accepted"),
        ({"count": 0}, r"^sec\.count: 0 is not accepted; accepted: an integer from 1 to 10$"),
        ({"count": 1e10}, r"^sec\.count: 10000000000\.0 is not accepted; .* from 1 to 10$"),
        ({"flag": 1}, r"^sec\.flag: 1 is not accepted; accepted: true or false$"),
        ({"pair": [1]}, r"^sec\.pair: \[1\] is not accepted; accepted: a list of 2"),
        ({"maybe": "x"}, r"^sec\.maybe: 'x' is not accepted; accepted: an integer or null$"),
        ({"names": "abc"}, r"^sec\.names: 'abc' is not accepted; accepted: a list of strings$"),
        ({"names": ["a", 3]}, r"^sec\.names\[1\]: 3 is not accepted; accepted: a string$"),
        ({"inner": {"rate": 2}}, r"^sec\.inner\.rate: 2 is not accepted; .* from 0 to 1$"),
        ({"inner": {"rat": 2}}, r"^sec\.inner: unknown key\(s\) \['rat'\]; accepted: \['rate'\]$"),
        ({"inner": 3}, r"^sec\.inner: 3 is not accepted; accepted: an object of Inner fields$"),
        ({"cuont": 2}, r"^sec: unknown key\(s\) \['cuont'\]; accepted: \['count', 'flag', "),
        ({"inner": {"rate": float("nan")}}, r"^sec\.inner\.rate: nan is not accepted"),
    ],
)
def test_bad_values_name_section_field_and_what_is_accepted(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(Outer, data, "sec")


def test_a_non_object_is_refused():
    with pytest.raises(ConfigError, match=r"^crawl: \[1\] is not accepted; accepted: an object"):
        CrawlConfig.from_dict([1])


@pytest.mark.parametrize(
    ("build", "data", "message"),
    [
        (CrawlConfig.from_dict, {"max_pages": "ten"},
         r"crawl\.max_pages: 'ten' is not accepted; accepted: an integer from 1 to 10000000"),
        (CrawlConfig.from_dict, {"timeout_s": 0}, r"crawl\.timeout_s: 0 is not accepted; .*> 0"),
        (CrawlConfig.from_dict, {"caption": {"mode": "best"}},
         r"crawl\.caption\.mode: 'best' is not accepted; accepted: one of compose, first"),
        (DownloadConfig.from_dict, {"timeout_s": 0}, r"download\.timeout_s: 0 is not accepted"),
        (DownloadConfig.from_dict, {"user_agent_token": "x"},
         r"download: unknown key\(s\) \['user_agent_token'\]; accepted: .*'robots_token'"),
        (FilterConfig.from_dict, {"min_image_side": "64"}, r"filter\.min_image_side: '64'"),
        (ShardConfig.from_dict, {"val_fraction": 1.5}, r"shard\.val_fraction: 1\.5 is not"),
        (IndexConfig.from_dict, {"batch_size": 0}, r"index\.batch_size: 0 is not accepted"),
        (IndexConfig.from_dict, {"splits": ["test"]}, r"index\.splits: 'test' .* one of train, val"),
        (EvalConfig.from_dict, {"ks": [0]}, r"eval\.ks: 0 is not accepted"),
        (EvalConfig.from_dict, {"vqa_head": {"lr": -1}}, r"eval\.vqa_head\.lr: -1 is not"),
        (TrainConfig.from_dict, {"lr": -1}, r"train\.lr: -1 is not accepted; accepted: a number > 0"),
        (TrainConfig.from_dict, {"use_queue": 0}, r"train\.use_queue: 0 .* true or false"),
        (TrainConfig.from_dict, {"augment": {"hue": 2}}, r"train\.augment\.hue: 2 is not accepted"),
        (PretrainConfig.from_dict, {"model_overrides": {"queue_size": 1e10}},
         r"train\.model_overrides \(model 'brivl-tiny'\): model\.queue_size: 10000000000\.0 is "
         r"not accepted; accepted: an integer from 1 to 1048576"),
        (PretrainConfig.from_dict, {"model_overrides": {"embed_dim": 2**31}},
         r"model\.embed_dim: 2147483648 is not accepted; accepted: an integer from 1 to 65536"),
        (PretrainConfig.from_dict, {"model": "brivl-huge"}, r"train\.model: unknown model"),
        (PretrainConfig.from_dict, {"placement_strategy": "x"}, r"train\.placement_strategy: 'x'"),
        (BriVLConfig.from_dict, {"image": {"frozen_stages": 9}}, r"model\.image\.frozen_stages: 9"),
        (VQGeneratorConfig.from_dict, {"perceptual": "vgg"}, r"generator\.perceptual: 'vgg'"),
        (VisualizeConfig.from_dict, {"augment": {"n_views": 0}},
         r"visualize\.augment\.n_views: 0 is not accepted; accepted: an integer from 1 to 256"),
        (TextToImageConfig.from_dict, {"lr": "fast"}, r"generate\.lr: 'fast' is not accepted"),
    ],
)
def test_every_stage_config_checks_at_the_boundary(build, data, message):
    with pytest.raises(ConfigError, match=message):
        build(data)


def test_post_init_problems_become_config_errors_naming_the_section():
    with pytest.raises(ConfigError, match=r"^train: bad TrainConfig: momentum 0\.999 -> 0\.99"):
        TrainConfig.from_dict({"momentum_start": 0.999, "momentum_end": 0.99})


def test_normalised_once_defaults_spelled_out_are_the_same_config():
    for cls in (CrawlConfig, DownloadConfig, FilterConfig, ShardConfig, IndexConfig, EvalConfig,
                PretrainConfig, VQGeneratorConfig, VisualizeConfig, TextToImageConfig):
        spelled = json.loads(json.dumps(asdict(cls.from_dict({}))))
        assert cls.from_dict(spelled) == cls.from_dict({}), cls.__name__
    assert TrainConfig.from_dict({"lr": 1}).to_dict() == TrainConfig.from_dict({"lr": 1.0}).to_dict()


def test_json_config_files_are_named_when_missing_or_unparsable(tmp_path: Path):
    with pytest.raises(ConfigError, match=rf"^--config {tmp_path}/nope\.json: no such file$"):
        read_json_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"crawl": {"max_pages": 3,}}')
    with pytest.raises(ConfigError, match=rf"--config {bad}: not valid JSON \(line 1, column"):
        read_json_config(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"holds list; accepted: a JSON object"):
        read_json_config(listed)
    good = tmp_path / "good.json"
    good.write_text('{"crawl": {"max_pages": 3}}')
    assert read_json_config(good) == {"crawl": {"max_pages": 3}}
