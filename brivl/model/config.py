"""Model configuration: dataclasses whose fields say what they mean, a JSON registry of
named configs (``brivl/model_configs/*.json``), and validation with errors that name the
field and what is accepted. The config travels inside every checkpoint."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brivl.config_parse import ConfigError, bounded, config_from_dict
from brivl.model.efficientnet import VARIANTS

REGISTRY_DIR = Path(__file__).resolve().parents[1] / "model_configs"
TINY_CNN = "tiny-cnn"
BACKBONES = (TINY_CNN, *sorted(VARIANTS))
TEXT_ENCODERS = ("scratch", "hf")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

WIDTH = 65_536  # the widest layer any field may ask for (a limit against typos like 2**31)


@dataclass
class ImageTowerConfig:
    backbone: str = TINY_CNN  # tiny-cnn | efficientnet-b0..b7 | efficientnet-lite0..4
    pretrained: str | None = None  # None (random), "imagenet" (shipped Lite0 file) or a weight file
    cnn_channels: list[int] = bounded([32, 64, 128], min=1, max=WIDTH)  # tiny-cnn stages
    frozen_stages: int = bounded(0, min=0, max=7)  # EfficientNet: stem + first N of 7 frozen
    freeze_bn: bool = False  # keep every backbone BatchNorm on its running statistics
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # of pixels in [0, 1]
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    scales: list[int] = bounded([1, 6], min=1, max=64)  # grids pooled: 1 + 36 = 37 patches
    patch_dim: int = bounded(128, min=1, max=WIDTH)  # width of the patch Transformer
    patch_layers: int = bounded(1, min=0, max=128)
    patch_heads: int = bounded(4, min=1, max=1024)
    patch_ffn: int = bounded(512, min=1, max=WIDTH)  # feed-forward width of the patch Transformer
    head_hidden: int = bounded(256, min=0, max=WIDTH)  # MLP head: patch_dim -> head_hidden ->
    #                                                    embed_dim (0: one linear layer)
    identity_init: bool = False  # patch Transformer starts as the identity (zero residual branches)
    dropout: float = 0.0


@dataclass
class TextTowerConfig:
    encoder: str = "scratch"  # scratch (plain torch Transformer) | hf (local HF directory)
    pretrained: str | None = None  # hf: "minilm" or a local directory with config.json + weights
    tokenizer: str | None = None  # "minilm", a tokenizer.json/dir, or None (caller passes one)
    vocab_size: int | None = bounded(None, min=1, max=10_000_000)  # scratch: from the tokenizer
    width: int | None = bounded(128, min=1, max=WIDTH)  # hidden size; hf: the pretrained one
    layers: int = bounded(2, min=1, max=128)  # scratch encoder layers
    heads: int = bounded(4, min=1, max=1024)
    ffn: int = bounded(512, min=1, max=WIDTH)
    max_length: int = bounded(32, min=3, max=8192)  # tokens per text, [CLS]/[SEP] included
    frozen_layers: int = bounded(0, min=0, max=128)  # embeddings + lower N encoder layers frozen
    token_layers: int = bounded(1, min=0, max=128)  # extra Transformer layers over the tokens
    token_heads: int = bounded(4, min=1, max=1024)
    token_ffn: int = bounded(512, min=1, max=WIDTH)  # feed-forward width of the token layers
    head_hidden: int = bounded(256, min=0, max=WIDTH)  # MLP head: width -> head_hidden ->
    #                                                    embed_dim (0: one linear layer)
    identity_init: bool = False  # token layers start as the identity (zero residual branches)
    dropout: float = 0.0
    hf_config: dict[str, Any] | None = None  # hf: the encoder's config (filled in on creation)


@dataclass
class BriVLConfig:
    name: str = "custom"
    embed_dim: int = bounded(128, min=1, max=WIDTH)  # joint space dimension (both towers)
    image_size: int = bounded(96, min=32, max=4096)  # square input side in pixels
    queue_size: int = bounded(1024, min=1, max=1_048_576)  # K keys per queue; a multiple of
    #                                                        the global batch
    temperature: float = bounded(0.07, gt=0, max=100)  # the InfoNCE temperature (fixed, as
    #   BriVL's); with learn_temperature its starting value
    learn_temperature: bool = False  # learn it (ALBEF/CLIP style, log-parametrised), clamped
    #   to temperature_range after every step; a parameter of the checkpoint then
    temperature_range: tuple[float, float] = bounded((0.01, 0.5), gt=0, max=100)  # (min, max)
    in_batch_negatives: bool = False  # also contrast against the other keys of the batch
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BriVLConfig:
        """Build from a JSON dict (a registry file, a checkpoint's config.json), every field
        checked (ConfigError names it)."""
        return config_from_dict(cls, copy.deepcopy(data), "model")


def list_models() -> list[str]:
    """Names of the configs in the registry."""
    return sorted(p.stem for p in REGISTRY_DIR.glob("*.json"))


def registry_config(name: str) -> dict[str, Any]:
    """The raw dict of a named config (or of a JSON file path)."""
    path = Path(name)
    if not (path.suffix == ".json" and path.is_file()):
        path = REGISTRY_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return json.loads(path.read_text())


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; ``image=`` / ``text=`` dicts merge field by field."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if key in ("image", "text") and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def _require(ok: bool, fieldname: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{fieldname}: {message}")


def _positive_int(value: Any, fieldname: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, fieldname,
             f"{value!r} is not accepted; accepted: a positive integer")


def validate(cfg: BriVLConfig, check_files: bool = True) -> BriVLConfig:
    """Check every field; raise :class:`ConfigError` naming the first bad one.

    ``check_files=False`` skips checking that pretrained weight files exist (a checkpoint
    holds the weights already)."""
    _positive_int(cfg.embed_dim, "embed_dim")
    _positive_int(cfg.queue_size, "queue_size")
    _positive_int(cfg.image_size, "image_size")
    _require(cfg.image_size >= 32, "image_size", f"{cfg.image_size} is too small; accepted: >= 32")
    _require(isinstance(cfg.temperature, (int, float)) and cfg.temperature > 0, "temperature",
             f"{cfg.temperature!r} is not accepted; accepted: a number > 0")
    low, high = cfg.temperature_range
    _require(low <= high, "temperature_range", f"{list(cfg.temperature_range)}; accepted: min <= max")
    _require(not cfg.learn_temperature or low <= cfg.temperature <= high, "temperature",
             f"{cfg.temperature} lies outside temperature_range {list(cfg.temperature_range)}; "
             "accepted: a starting value within the range")
    _validate_image(cfg.image, check_files)
    _validate_text(cfg.text)
    return cfg


def _validate_image(im: ImageTowerConfig, check_files: bool) -> None:
    _require(im.backbone in BACKBONES, "image.backbone",
             f"{im.backbone!r} is not a known backbone; accepted: {', '.join(BACKBONES)}")
    if im.pretrained is not None:
        _require(im.backbone != TINY_CNN, "image.pretrained",
                 "tiny-cnn has no pretrained weights; accepted: null")
        if im.pretrained == "imagenet":
            _require(im.backbone == "efficientnet-lite0", "image.pretrained",
                     f"'imagenet' weights are shipped for efficientnet-lite0 only, not {im.backbone}; "
                     "accepted: null or a local .pth/.safetensors weight file")
        elif check_files:
            _require(Path(im.pretrained).is_file(), "image.pretrained",
                     f"weight file {im.pretrained!r} not found; accepted: null, 'imagenet' "
                     "(efficientnet-lite0) or a local .pth/.safetensors file")
    _require(isinstance(im.scales, list) and len(im.scales) > 0
             and all(isinstance(s, int) and s > 0 for s in im.scales), "image.scales",
             f"{im.scales!r} is not accepted; accepted: a non-empty list of positive grid sizes, e.g. [1, 6]")
    _require(len(im.mean) == 3 and len(im.std) == 3 and all(s > 0 for s in im.std),
             "image.mean/std", "accepted: three values each, std > 0")
    _require(isinstance(im.cnn_channels, list) and len(im.cnn_channels) > 0
             and all(isinstance(c, int) and c > 0 for c in im.cnn_channels),
             "image.cnn_channels", f"{im.cnn_channels!r}; accepted: a non-empty list of positive ints")
    _require(isinstance(im.frozen_stages, int) and 0 <= im.frozen_stages <= 7, "image.frozen_stages",
             f"{im.frozen_stages!r}; accepted: 0..7 (stages of EfficientNet)")
    _require(im.backbone != TINY_CNN or im.frozen_stages == 0, "image.frozen_stages",
             "tiny-cnn trains from scratch; accepted: 0")
    _positive_int(im.patch_dim, "image.patch_dim")
    _positive_int(im.patch_heads, "image.patch_heads")
    _require(isinstance(im.head_hidden, int) and im.head_hidden >= 0, "image.head_hidden",
             f"{im.head_hidden!r}; accepted: an integer >= 0 (0: a linear head)")
    _positive_int(im.patch_ffn, "image.patch_ffn")
    _require(im.patch_dim % im.patch_heads == 0, "image.patch_dim",
             f"{im.patch_dim} is not divisible by image.patch_heads={im.patch_heads}; "
             "accepted: a multiple of patch_heads")
    _require(isinstance(im.patch_layers, int) and im.patch_layers >= 0, "image.patch_layers",
             f"{im.patch_layers!r}; accepted: an integer >= 0")
    _require(0.0 <= im.dropout < 1.0, "image.dropout", f"{im.dropout!r}; accepted: 0 <= p < 1")


def _validate_text(tx: TextTowerConfig) -> None:
    _require(tx.encoder in TEXT_ENCODERS, "text.encoder",
             f"{tx.encoder!r} is not a known text encoder; accepted: {', '.join(TEXT_ENCODERS)}")
    if tx.encoder == "hf":
        _require(tx.pretrained is not None or tx.hf_config is not None, "text.pretrained",
                 "the hf encoder needs weights; accepted: 'minilm' or a local HF model directory")
    else:
        _require(tx.pretrained is None, "text.pretrained",
                 "the scratch encoder has no pretrained weights; accepted: null (or text.encoder='hf')")
        _positive_int(tx.width, "text.width")
        _positive_int(tx.heads, "text.heads")
        _positive_int(tx.ffn, "text.ffn")
        _require(isinstance(tx.layers, int) and tx.layers >= 1, "text.layers",
                 f"{tx.layers!r}; accepted: an integer >= 1")
        _require(tx.width % tx.heads == 0, "text.width",
                 f"{tx.width} is not divisible by text.heads={tx.heads}; accepted: a multiple of heads")
        _require(isinstance(tx.frozen_layers, int) and 0 <= tx.frozen_layers <= tx.layers,
                 "text.frozen_layers", f"{tx.frozen_layers!r}; accepted: 0..{tx.layers}")
    _positive_int(tx.max_length, "text.max_length")
    _require(tx.max_length >= 3, "text.max_length", f"{tx.max_length}; accepted: >= 3")
    _positive_int(tx.token_heads, "text.token_heads")
    _require(isinstance(tx.head_hidden, int) and tx.head_hidden >= 0, "text.head_hidden",
             f"{tx.head_hidden!r}; accepted: an integer >= 0 (0: a linear head)")
    _positive_int(tx.token_ffn, "text.token_ffn")
    _require(isinstance(tx.token_layers, int) and tx.token_layers >= 0, "text.token_layers",
             f"{tx.token_layers!r}; accepted: an integer >= 0")
    if tx.width is not None:
        _require(tx.width % tx.token_heads == 0, "text.token_heads",
                 f"text.width={tx.width} is not divisible by {tx.token_heads}; accepted: a divisor of width")
    _require(0.0 <= tx.dropout < 1.0, "text.dropout", f"{tx.dropout!r}; accepted: 0 <= p < 1")
