"""``create_model(name, **overrides)``: a named config from the registry, validated and built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from brivl.model.bert import SUPPORTED
from brivl.model.config import (
    BriVLConfig,
    ConfigError,
    merge_overrides,
    registry_config,
    validate,
)
from brivl.model.model import BriVL
from brivl.model.tokenizer import TextTokenizer
from brivl.model.towers import hf_source_dir


def _resolve_hf(cfg: BriVLConfig) -> None:
    """Fill in ``text.hf_config`` and ``text.width`` from the pretrained directory."""
    tx = cfg.text
    if tx.encoder != "hf":
        return
    if tx.pretrained is not None:
        source = Path(hf_source_dir(tx.pretrained))
        config_file = source / "config.json"
        if not config_file.is_file():
            raise ConfigError(
                f"text.pretrained: {source} holds no config.json; accepted: 'minilm' or a local "
                "HF model directory (config.json + weights + tokenizer.json)"
            )
        hf = json.loads(config_file.read_text())
        keep = {k: v for k, v in hf.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
        tx.hf_config = keep
    hidden = tx.hf_config.get("hidden_size")
    if tx.width is not None and tx.width != hidden:
        raise ConfigError(
            f"text.width={tx.width} does not match hidden_size={hidden} of the pretrained text "
            f"encoder {tx.pretrained}; accepted: null or {hidden}"
        )
    tx.width = hidden
    if tx.width % tx.token_heads:
        raise ConfigError(f"text.token_heads: {tx.token_heads} does not divide the encoder width {hidden}")
    layers = tx.hf_config.get("num_hidden_layers", 0)
    if not 0 <= tx.frozen_layers <= layers:
        raise ConfigError(f"text.frozen_layers: {tx.frozen_layers}; accepted: 0..{layers}")
    roberta = tx.hf_config.get("model_type") == "roberta"
    limit = tx.hf_config.get("max_position_embeddings", 512) - (2 if roberta else 0)
    if tx.max_length > limit:
        raise ConfigError(f"text.max_length: {tx.max_length} exceeds the encoder's positions; accepted: <= {limit}")
    if tx.hf_config.get("model_type") not in SUPPORTED:
        raise ConfigError(f"text.hf_config.model_type: {tx.hf_config.get('model_type')!r}; accepted: {SUPPORTED}")


def _check_tokenizer(cfg: BriVLConfig, tok: TextTokenizer) -> None:
    """The tokenizer's ids must fit the text encoder's embedding table."""
    tx = cfg.text
    if tx.encoder == "scratch":
        if tx.vocab_size is not None and tx.vocab_size != tok.vocab_size:
            raise ConfigError(
                f"text.vocab_size={tx.vocab_size} does not match the tokenizer's "
                f"{tok.vocab_size}; accepted: null or {tok.vocab_size}"
            )
        tx.vocab_size = tok.vocab_size
        return
    vocab = tx.hf_config.get("vocab_size", 0)
    if tok.vocab_size > vocab:
        raise ConfigError(f"text.hf_config.vocab_size={vocab} is smaller than the tokenizer's "
                          f"{tok.vocab_size}; accepted: >= {tok.vocab_size}")
    if tx.hf_config.get("model_type") == "roberta" and tx.hf_config.get("pad_token_id") != tok.pad_id:
        raise ConfigError(f"text.hf_config.pad_token_id={tx.hf_config.get('pad_token_id')} differs from "
                          f"the tokenizer's padding id {tok.pad_id}; accepted: {tok.pad_id}")


def _tokenizer_for(cfg: BriVLConfig, tokenizer: Tokenizer | TextTokenizer | str | Path | None) -> TextTokenizer:
    source: Any = tokenizer
    if source is None:
        if cfg.text.encoder == "hf" and cfg.text.pretrained is not None:
            source = hf_source_dir(cfg.text.pretrained)
        elif cfg.text.tokenizer is not None:
            source = cfg.text.tokenizer
        else:
            raise ConfigError(
                f"{cfg.name} needs a tokenizer: create_model({cfg.name!r}, tokenizer=tok) with tok "
                "from brivl.model.tokenizer.train_tokenizer(captions), a tokenizer.json path, or "
                "text={'tokenizer': 'minilm'}"
            )
    if isinstance(source, TextTokenizer):
        source = source.tokenizer
    return TextTokenizer(source, cfg.text.max_length)


def build_config(name: str, overrides: dict[str, Any] | None = None) -> BriVLConfig:
    """The validated config of a registry name (or JSON path) with ``overrides`` applied."""
    raw = merge_overrides(registry_config(name), overrides or {})
    raw.setdefault("name", Path(name).stem)
    return validate(BriVLConfig.from_dict(raw))


def resolve(name: str, tokenizer: Tokenizer | TextTokenizer | str | Path | None = None,
            **overrides: Any) -> tuple[BriVLConfig, TextTokenizer]:
    """The fully resolved config (text width, vocabulary, HF config filled in) and tokenizer."""
    cfg = build_config(name, overrides)
    _resolve_hf(cfg)
    tok = _tokenizer_for(cfg, tokenizer)
    _check_tokenizer(cfg, tok)
    return cfg, tok


def create_model(name: str, tokenizer: Tokenizer | TextTokenizer | str | Path | None = None,
                 pretrained: bool = True, **overrides: Any) -> BriVL:
    """Build a named model; ``overrides`` replace top-level fields, ``image=`` / ``text=`` dicts
    replace tower fields. ``pretrained=False`` skips loading backbone/encoder weights.

    >>> create_model("brivl-tiny", tokenizer=train_tokenizer(captions), queue_size=256)
    """
    cfg, tok = resolve(name, tokenizer, **overrides)
    return BriVL(cfg, tok, load_pretrained=pretrained)


def model_from_config(cfg: BriVLConfig, tokenizer: Tokenizer | TextTokenizer | str | Path) -> BriVL:
    """Rebuild the architecture of a resolved config (as stored in a checkpoint), no weights."""
    validate(cfg, check_files=False)
    tok = _tokenizer_for(cfg, tokenizer)
    _check_tokenizer(cfg, tok)
    return BriVL(cfg, tok, load_pretrained=False)
