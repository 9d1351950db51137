"""brivl-lite really carries the shipped pretrained weights; brivl-paper builds and runs.

The photos come from packages installed with the project's dependencies (matplotlib's
Grace Hopper portrait, scikit-learn's China and flower samples).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from brivl.model import create_model
from brivl.model.efficientnet import imagenet_classifier, shipped_lite0_weights
from brivl.model.factory import resolve
from brivl.model.preprocess import load_images
from brivl.model.towers import ImageTower

# ImageNet class ids
MILITARY_UNIFORM, PALACE, BELL_COTE, MONASTERY, STUPA, DAISY = 652, 698, 442, 663, 832, 985


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return create_model("brivl-lite")


@pytest.fixture(scope="module")
def photos():
    paths = [
        package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        package_file("sklearn", "datasets", "images", "china.jpg"),
        package_file("sklearn", "datasets", "images", "flower.jpg"),
    ]
    return load_images(paths, 224)


def imagenet_probs(tower: ImageTower, pixels: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled features through the ImageNet classifier of the weight file."""
    fc = imagenet_classifier(shipped_lite0_weights())
    tower.eval()
    with torch.no_grad():
        fmap = tower.backbone((pixels - tower.mean) / tower.std)  # (B, 1280, 7, 7)
        return fc(fmap.mean(dim=(2, 3))).softmax(dim=-1)


def test_lite_backbone_classifies_known_photos(lite, photos):
    probs = imagenet_probs(lite.image_tower, photos)
    top5 = probs.topk(5).indices.tolist()
    assert top5[0][0] == MILITARY_UNIFORM and probs[0, MILITARY_UNIFORM] > 0.2
    assert top5[1][0] in {PALACE, BELL_COTE, MONASTERY, STUPA}
    assert DAISY in top5[2]
    # the momentum copy starts from the same weights
    assert torch.allclose(imagenet_probs(lite.image_tower_m, photos), probs)
    # the same architecture without the shipped weights recognises nothing
    torch.manual_seed(0)
    blank = create_model("brivl-lite", pretrained=False, text={"frozen_layers": 0})
    blank_probs = imagenet_probs(blank.image_tower, photos)
    assert blank_probs.max() < 0.05 and blank_probs.argmax(1).tolist() != probs.argmax(1).tolist()


def test_lite_text_encoder_ranks_related_sentences_first(lite):
    anchors = [
        "A man is playing a guitar.",
        "A child is swimming in the pool.",
        "The stock market fell sharply today.",
    ]
    related = [
        "Someone is playing a musical instrument.",
        "A kid swims in the water.",
        "Share prices dropped on Wall Street.",
    ]
    batch = lite.tokenize(anchors + related)
    encoder = lite.text_tower.encoder.eval()
    with torch.no_grad():
        tokens = encoder(batch["input_ids"], batch["attention_mask"])  # (6, L, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = F.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1)
    sim = emb[:3] @ emb[3:].t()  # anchors x candidates
    assert sim.argmax(dim=1).tolist() == [0, 1, 2], sim
    assert (sim.diag() - sim.fill_diagonal_(-1).max(dim=1).values).min() > 0.2


def test_lite_freezes_lower_layers_and_trains_the_top(lite):
    img, txt = lite.image_tower.backbone, lite.text_tower.encoder.model
    assert not img._conv_stem.weight.requires_grad
    assert all(not p.requires_grad for b in img._blocks if b.spec.stage < 3 for p in b.parameters())
    assert all(p.requires_grad for b in img._blocks if b.spec.stage >= 3 for p in b.parameters())
    assert not txt.embeddings.word_embeddings.weight.requires_grad
    assert [any(p.requires_grad for p in layer.parameters()) for layer in txt.encoder.layer] == [
        False
    ] * 4 + [True] * 2
    lite.train()
    assert all(
        not m.training for m in img.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )  # freeze_bn
    trainable = sum(p.numel() for p in lite.trainable_parameters())
    total = sum(p.numel() for p in lite.image_tower.parameters()) + sum(
        p.numel() for p in lite.text_tower.parameters()
    )
    assert 0.1 * total < trainable < 0.5 * total


def test_lite_training_step_moves_only_the_unfrozen_part():
    model = create_model("brivl-lite", image_size=64, queue_size=4)
    frozen = model.image_tower.backbone._blocks[0]._depthwise_conv.weight.clone()
    top = model.image_tower.backbone._blocks[-1]._project_conv.weight.clone()
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    batch = model.tokenize(["a dog on the grass", "a red car"])
    for _ in range(2):
        out = model(torch.rand(2, 3, 64, 64), **batch, momentum=0.5)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(out["loss"].detach()) > 0
    assert torch.equal(model.image_tower.backbone._blocks[0]._depthwise_conv.weight, frozen)
    assert not torch.equal(model.image_tower.backbone._blocks[-1]._project_conv.weight, top)


def test_paper_builds_and_runs_forward():
    # the whole model (towers, momentum towers, queues) on the meta device: shapes, no memory
    with torch.device("meta"):
        model = create_model("brivl-paper", image_size=64)
    assert model.config.embed_dim == 2048 and model.image_queue.shape == (9600, 2048)
    params = sum(p.numel() for p in model.parameters())
    assert (
        0.9e9 < params < 1.0e9
    )  # 2 x (B7 + RoBERTa-large-size encoder + patch/token layers + heads)
    text = model.tokenize(["a dog runs on the beach", "a cat"])
    pixels = torch.rand(2, 3, 64, 64, device="meta")
    out = model(
        pixels, text["input_ids"].to("meta"), text["attention_mask"].to("meta"), enqueue=False
    )
    assert (
        out["image_embed"].shape == out["text_key"].shape == (2, 2048) and out["loss"].shape == ()
    )

    assert (
        model.config.text.width == 1024 and model.config.text.hf_config["num_hidden_layers"] == 24
    )
    assert len(model.text_tower.encoder.model.encoder.layer) == 24

    # the B7 image tower for real (SE blocks, SiLU), at a small image size and batch 2
    cfg, _ = resolve("brivl-paper", image_size=64)
    image = ImageTower(cfg.image, cfg.embed_dim)
    assert image.backbone.out_channels == 2560 and len(image.backbone._blocks) == 55
    with torch.no_grad():
        emb = image(torch.rand(2, 3, 64, 64))
    assert emb.shape == (2, 2048) and torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
