"""BERT / RoBERTa encoders in plain torch, reading Hugging Face weight files from a local
directory (``config.json`` + ``model.safetensors``). No hub access, no ``transformers``
import (which costs seconds): parameter names match the HF layout, so a state dict of
``BertModel`` / ``RobertaModel`` loads as is (the pooler is ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brivl.model.recompute import Checkpointable, run_block

SUPPORTED = ("bert", "roberta")


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))  # each (B, h, L, d/h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, n, d)  # (B, L, D)


class DenseNorm(nn.Module):
    """``LayerNorm(residual + dropout(dense(x)))``, HF's ``*Output`` blocks."""

    def __init__(self, d_in: int, d_out: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-12)
        self.self = SelfAttention(hidden, cfg["num_attention_heads"], cfg.get("attention_probs_dropout_prob", 0.0))
        self.output = DenseNorm(hidden, hidden, eps, cfg.get("hidden_dropout_prob", 0.0))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden, ffn = cfg["hidden_size"], cfg["intermediate_size"]
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(hidden, ffn)
        self.output = DenseNorm(ffn, hidden, cfg.get("layer_norm_eps", 1e-12), cfg.get("hidden_dropout_prob", 0.0))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))


class Embeddings(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden = cfg["hidden_size"]
        self.roberta = cfg["model_type"] == "roberta"
        self.padding_idx = cfg.get("pad_token_id", 0) or 0
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], hidden)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], hidden)
        self.token_type_embeddings = nn.Embedding(cfg.get("type_vocab_size", 2), hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=cfg.get("layer_norm_eps", 1e-12))
        self.dropout = nn.Dropout(cfg.get("hidden_dropout_prob", 0.0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.roberta:  # positions count real tokens from padding_idx + 1
            real = (input_ids != self.padding_idx).long()
            positions = torch.cumsum(real, dim=1) * real + self.padding_idx
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]  # single segment
        return self.dropout(self.LayerNorm(x))


class BertEncoder(Checkpointable, nn.Module):
    """``forward(input_ids, attention_mask) -> last hidden state (B, L, hidden)``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        if cfg.get("model_type") not in SUPPORTED:
            raise ValueError(f"text encoder model_type {cfg.get('model_type')!r}; accepted: {SUPPORTED}")
        if cfg["hidden_size"] % cfg["num_attention_heads"]:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        self.config = cfg
        device = torch.get_default_device()
        with torch.device("meta"):  # allocate once, initialise once (BERT init, std 0.02)
            self.embeddings = Embeddings(cfg)
            self.encoder = Encoder(cfg)
        if device.type != "meta":
            self.to_empty(device=device)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        std = self.config.get("initializer_range", 0.02)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(self.embeddings(input_ids), attention_mask, 0, None)

    def forward_layers(self, x: torch.Tensor, attention_mask: torch.Tensor, start: int,
                       stop: int | None) -> torch.Tensor:
        """Encoder layers ``start:stop`` on hidden states x (B, L, hidden)."""
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L) True = attend
        for layer in self.encoder.layer[start:stop]:
            x = run_block(self, layer, x, keep)  # checkpointed with grad_checkpointing
        return x


def read_hf_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The encoder's state dict from ``model.safetensors`` (or a tensors-only ``pytorch_model.bin``),
    with any ``bert.`` / ``roberta.`` prefix removed and the pooler dropped."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(directory / "model.safetensors"))
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(str(directory / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{directory} holds no model.safetensors or pytorch_model.bin")
    out = {}
    for key, value in state.items():
        for prefix in ("bert.", "roberta.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(("embeddings.", "encoder.")) and not key.endswith("position_ids"):
            out[key] = value
    return out


def load_pretrained(encoder: BertEncoder, directory: str | Path) -> None:
    """Load HF weights into ``encoder``; raises naming missing / unexpected keys."""
    state = read_hf_weights(directory)
    own = encoder.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{directory} does not fit the text encoder: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    encoder.load_state_dict(state)
