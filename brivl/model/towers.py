"""The two towers. Both end in an MLP head and an L2-normalised ``embed_dim`` vector.

Image: pixels in [0, 1] -> normalise (mean/std inside the tower) -> CNN feature map ->
multi-scale grid patch pooling -> per-patch linear + patch position -> Transformer over
patches -> mean -> MLP head.

Text: token ids -> Transformer encoder (from scratch, or a local HF model such as MiniLM)
-> extra token Transformer layers -> masked mean -> MLP head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brivl.model.bert import BertEncoder
from brivl.model.bert import load_pretrained as load_pretrained_bert
from brivl.model.config import TINY_CNN, ImageTowerConfig, TextTowerConfig
from brivl.model.efficientnet import (
    EfficientNet,
    load_imagenet_weights,
    shipped_lite0_weights,
)
from brivl.model.pooling import grid_patch_pool, num_patches
from brivl.model.recompute import Checkpointable, run_block
from brivl.model.tokenizer import minilm_dir


def mlp_head(d_in: int, hidden: int, d_out: int) -> nn.Module:
    """Linear -> GELU -> Linear; one linear projection when ``hidden == 0``."""
    if hidden == 0:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def transformer(width: int, heads: int, layers: int, ffn: int, dropout: float,
                identity_init: bool = False) -> nn.Module:
    """Pre-norm Transformer encoder (batch first); identity when ``layers == 0``.

    ``identity_init`` zeroes each layer's residual branch outputs (attention out-projection,
    second feed-forward linear), so the stack starts as the identity up to its final norm:
    features from a pretrained encoder below pass through unchanged at step 0.
    """
    if layers == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    stack = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
    if identity_init:
        for block in stack.layers:
            for linear in (block.self_attn.out_proj, block.linear2):
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
    return stack


def run_transformer(module: nn.Module, x: torch.Tensor, pad_mask: torch.Tensor | None = None,
                    owner: Checkpointable | None = None) -> torch.Tensor:
    """A :func:`transformer` stack on x (B, L, width); layer by layer, each checkpointed, when
    ``owner`` has gradient checkpointing on."""
    if isinstance(module, nn.Identity):
        return x
    if owner is not None and owner.grad_checkpointing and torch.is_grad_enabled():
        for layer in module.layers:
            x = run_block(owner, layer, x, src_key_padding_mask=pad_mask)
        return module.norm(x) if module.norm is not None else x
    return module(x, src_key_padding_mask=pad_mask)


class TinyCNN(Checkpointable, nn.Module):
    """A small from-scratch CNN: per stage conv3x3 stride 2 + GroupNorm + ReLU.

    GroupNorm (not BatchNorm) keeps each sample's features independent of the batch, so a
    batch split over workers computes exactly what one worker computes on the whole batch.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.GroupNorm(min(8, c), c), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, C, H / 2**stages, W / 2**stages)

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        return x  # nothing is frozen

    def forward_trainable(self, x: torch.Tensor) -> torch.Tensor:
        return run_block(self, self.body, x)


def build_backbone(cfg: ImageTowerConfig, load_pretrained: bool) -> nn.Module:
    if cfg.backbone == TINY_CNN:
        return TinyCNN(cfg.cnn_channels)
    net = EfficientNet(cfg.backbone, frozen_stages=cfg.frozen_stages, freeze_bn=cfg.freeze_bn)
    if load_pretrained and cfg.pretrained is not None:
        path = shipped_lite0_weights() if cfg.pretrained == "imagenet" else cfg.pretrained
        load_imagenet_weights(net, path)
    return net


class ImageTower(Checkpointable, nn.Module):
    """``forward(pixels (B, 3, H, W) in [0, 1]) -> (B, embed_dim)`` L2-normalised."""

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int, load_pretrained: bool = True) -> None:
        super().__init__()
        self.scales = list(cfg.scales)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        self.backbone = build_backbone(cfg, load_pretrained)
        n_patches = num_patches(self.scales)
        self.patch_proj = nn.Linear(self.backbone.out_channels, cfg.patch_dim)
        self.patch_pos = nn.Parameter(torch.zeros(1, n_patches, cfg.patch_dim))
        nn.init.normal_(self.patch_pos, std=0.02)
        self.patch_encoder = transformer(cfg.patch_dim, cfg.patch_heads, cfg.patch_layers,
                                         cfg.patch_ffn, cfg.dropout, cfg.identity_init)
        self.head = mlp_head(cfg.patch_dim, cfg.head_hidden, embed_dim)

    def trunk_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor :meth:`trunk` computes with, by name ({} when nothing is frozen)."""
        modules = self.backbone.frozen_modules() if hasattr(self.backbone, "frozen_modules") else []
        if not modules:
            return {}
        out = {"mean": self.mean, "std": self.std}
        for i, module in enumerate(modules):
            out.update({f"{i}.{k}": v for k, v in module.state_dict().items()})
        return out

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen prefix's output: the same for the query and the momentum tower."""
        return self.backbone.forward_frozen((pixels - self.mean) / self.std)  # (B, C', h', w')

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-patch vectors after the patch Transformer, (B, P, patch_dim)."""
        return self.patches_from_trunk(self.trunk(pixels))

    def patches_from_trunk(self, trunk: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone.forward_trainable(trunk)  # (B, C, h, w)
        x = grid_patch_pool(fmap, self.scales)  # (B, P, C)
        x = self.patch_proj(x) + self.patch_pos  # (B, P, patch_dim)
        return run_transformer(self.patch_encoder, x, owner=self)  # (B, P, patch_dim)

    def from_trunk(self, trunk: torch.Tensor) -> torch.Tensor:
        """The embedding from :meth:`trunk`'s output, (B, embed_dim) L2-normalised."""
        x = self.patches_from_trunk(trunk).mean(dim=1)  # (B, patch_dim)
        return F.normalize(self.head(x), dim=-1)  # (B, embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.from_trunk(self.trunk(pixels))  # (B, embed_dim)


class ScratchTextEncoder(Checkpointable, nn.Module):
    """Token + position embeddings and a pre-norm Transformer, trained from scratch."""

    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positions = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.width))
        nn.init.normal_(self.embeddings.weight, std=0.02)
        nn.init.normal_(self.positions, std=0.02)
        self.layers = transformer(cfg.width, cfg.heads, cfg.layers, cfg.ffn, cfg.dropout)

    frozen_layers = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.frozen_layers <= 0:
            return run_transformer(self.layers, self.embed(input_ids), attention_mask == 0, self)
        return self.forward_trainable(self.forward_frozen(input_ids, attention_mask), attention_mask)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        return self.embeddings(input_ids) + self.positions[:, :length]  # (B, L, width)

    def forward_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings and the frozen lower layers (call only when ``frozen_layers > 0``)."""
        x = self.embed(input_ids)  # (B, L, width)
        for layer in self.layers.layers[: self.frozen_layers]:
            x = layer(x, src_key_padding_mask=attention_mask == 0)
        return x  # (B, L, width)

    def forward_trainable(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The layers above the frozen ones (and the final norm), (B, L, width)."""
        for layer in self.layers.layers[self.frozen_layers:]:
            x = run_block(self, layer, x, src_key_padding_mask=attention_mask == 0)
        return self.layers.norm(x)

    def frozen_state(self) -> dict[str, torch.Tensor]:
        """The embeddings' and frozen layers' tensors, by name."""
        out = {"embeddings": self.embeddings.weight, "positions": self.positions}
        for i, layer in enumerate(self.layers.layers[: self.frozen_layers]):
            out.update({f"layer{i}.{k}": v for k, v in layer.state_dict().items()})
        return out

    def freeze_lower(self, n: int) -> None:
        if n <= 0:
            return
        self.frozen_layers = n
        for p in [self.embeddings.weight, self.positions]:
            p.requires_grad_(False)
        for layer in self.layers.layers[:n]:
            layer.requires_grad_(False)


def hf_source_dir(pretrained: str) -> str:
    return str(minilm_dir()) if pretrained == "minilm" else pretrained


class HFTextEncoder(nn.Module):
    """A BERT/RoBERTa encoder with HF-format weights from a local directory; never a hub id."""

    def __init__(self, cfg: TextTowerConfig, load_pretrained: bool) -> None:
        super().__init__()
        hf = {**(cfg.hf_config or {}), "hidden_dropout_prob": cfg.dropout,
              "attention_probs_dropout_prob": cfg.dropout}
        self.model = BertEncoder(hf)
        if load_pretrained and cfg.pretrained is not None:
            load_pretrained_bert(self.model, hf_source_dir(cfg.pretrained))

    frozen_layers = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)  # (B, L, hidden)

    def forward_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings and the frozen lower layers (call only when ``frozen_layers > 0``)."""
        x = self.model.embeddings(input_ids)  # (B, L, hidden)
        return self.model.forward_layers(x, attention_mask, 0, self.frozen_layers)

    def forward_trainable(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.forward_layers(x, attention_mask, self.frozen_layers, None)

    def frozen_state(self) -> dict[str, torch.Tensor]:
        """The embeddings' and frozen layers' tensors, by name."""
        out = {f"embeddings.{k}": v for k, v in self.model.embeddings.state_dict().items()}
        for i, layer in enumerate(self.model.encoder.layer[: self.frozen_layers]):
            out.update({f"layer{i}.{k}": v for k, v in layer.state_dict().items()})
        return out

    def freeze_lower(self, n: int) -> None:
        if n <= 0:
            return
        self.frozen_layers = n
        self.model.embeddings.requires_grad_(False)
        for layer in self.model.encoder.layer[:n]:
            layer.requires_grad_(False)


class TextTower(Checkpointable, nn.Module):
    """``forward(input_ids, attention_mask) -> (B, embed_dim)`` L2-normalised."""

    def __init__(self, cfg: TextTowerConfig, embed_dim: int, load_pretrained: bool = True) -> None:
        super().__init__()
        if cfg.encoder == "hf":
            self.encoder: nn.Module = HFTextEncoder(cfg, load_pretrained)
        else:
            self.encoder = ScratchTextEncoder(cfg)
        self.encoder.freeze_lower(cfg.frozen_layers)
        self.token_encoder = transformer(cfg.width, cfg.token_heads, cfg.token_layers, cfg.token_ffn,
                                         cfg.dropout, cfg.identity_init)
        self.head = mlp_head(cfg.width, cfg.head_hidden, embed_dim)

    def tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token vectors after the token layers, (B, L, width)."""
        return self.tokens_from_trunk(self.trunk(input_ids, attention_mask), input_ids, attention_mask)

    def trunk_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor :meth:`trunk` computes with, by name ({} when nothing is frozen)."""
        return self.encoder.frozen_state() if self.encoder.frozen_layers > 0 else {}

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Hidden states after the frozen layers, (B, L, width); None when nothing is frozen."""
        if self.encoder.frozen_layers <= 0:
            return None
        return self.encoder.forward_frozen(input_ids, attention_mask)

    def tokens_from_trunk(self, trunk: torch.Tensor | None, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
        if trunk is None:
            x = self.encoder(input_ids, attention_mask)  # (B, L, width)
        else:
            x = self.encoder.forward_trainable(trunk, attention_mask)  # (B, L, width)
        return run_transformer(self.token_encoder, x, attention_mask == 0, self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.from_trunk(self.trunk(input_ids, attention_mask), input_ids, attention_mask)

    def from_trunk(self, trunk: torch.Tensor | None, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """The embedding from :meth:`trunk`'s output, (B, embed_dim) L2-normalised."""
        x = self.tokens_from_trunk(trunk, input_ids, attention_mask)  # (B, L, width)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        pooled = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, width)
        return F.normalize(self.head(pooled), dim=-1)  # (B, embed_dim)
