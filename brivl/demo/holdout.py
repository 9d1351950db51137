"""Which OpenClipArt pictures are held out for evaluation and never go on the demo site.

Deterministic from the catalogue and :class:`HoldoutConfig`: whole categories (leaf folders
of ``min_images..max_images`` usable pictures with a name no other folder shares, outside
``special/`` and ``unsorted/``), taken in hash order until they hold ``category_share`` of
the usable pictures; then every picture of the remaining categories whose title hashes below
``title_share`` (pictures whose bytes occur once). A site picture with the same bytes as a held-out one is left off both.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

from brivl.demo.openclipart import ClipArt

EXCLUDED_ROOTS = ("special", "unsorted")  # abstract fills and the package's leftovers


@dataclass(frozen=True)
class HoldoutConfig:
    """How the held-out evaluation share is chosen."""

    category_share: float = 0.10  # share of usable pictures held out as whole categories
    title_share: float = 0.02  # share of titles held out from the site's categories
    min_images: int = 12  # a held-out category has at least this many usable pictures
    max_images: int = 150  # ... and at most this many
    max_pixels: int = 4_000_000  # larger PNGs (posters of 16000 px) are used nowhere
    seed: int = 0


@dataclass(frozen=True)
class Holdout:
    """The catalogue split: site pictures, held-out ones, and the ones used nowhere."""

    site: tuple[ClipArt, ...]
    categories: tuple[str, ...]  # held-out category folders, sorted
    by_category: tuple[ClipArt, ...]  # the pictures of those categories
    by_title: tuple[ClipArt, ...]  # held-out titles from the site's categories
    excluded: tuple[ClipArt, ...]  # unusable size, or the same bytes as a held-out picture

    @property
    def heldout(self) -> tuple[ClipArt, ...]:
        return self.by_category + self.by_title


def usable(item: ClipArt, config: HoldoutConfig) -> bool:
    """A picture with a readable size of at most ``max_pixels``."""
    return 0 < item.width * item.height <= config.max_pixels


def _rank(seed: int, kind: str, key: str) -> float:
    digest = hashlib.sha256(f"brivl-openclipart:{seed}:{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def eligible_categories(items: list[ClipArt], config: HoldoutConfig) -> list[str]:
    """Categories that may be held out whole (see the module docstring), sorted."""
    sizes = Counter(i.category for i in items if usable(i, config))
    names: dict[str, set[str]] = defaultdict(set)
    for item in items:
        names[item.category_name].add(item.category)
    every = set(sizes)
    out = []
    for category, n in sizes.items():
        leaf = not any(other.startswith(category + "/") for other in every)
        root = category.split("/", 1)[0]
        name = next(i.category_name for i in items if i.category == category)
        if (leaf and root not in EXCLUDED_ROOTS and len(names[name]) == 1
                and config.min_images <= n <= config.max_images):
            out.append(category)
    return sorted(out)


def split_holdout(items: list[ClipArt], config: HoldoutConfig | None = None) -> Holdout:
    """Split a catalogue into site and held-out pictures (see the module docstring)."""
    config = config or HoldoutConfig()
    good = [i for i in items if usable(i, config)]
    target = config.category_share * len(good)
    chosen: list[str] = []
    held = 0
    sizes = Counter(i.category for i in good)
    for category in sorted(eligible_categories(items, config),
                           key=lambda c: _rank(config.seed, "category", c)):
        if held >= target:
            break
        chosen.append(category)
        held += sizes[category]
    in_category = set(chosen)
    by_category = [i for i in good if i.category in in_category]
    rest = [i for i in good if i.category not in in_category]
    copies = Counter(i.sha256 for i in good)
    by_title = [i for i in rest if copies[i.sha256] == 1
                and _rank(config.seed, "title", i.title.lower()) < config.title_share]
    heldout_bytes = {i.sha256 for i in by_category + by_title}
    titled = {i.file for i in by_title}
    site = [i for i in rest if i.file not in titled and i.sha256 not in heldout_bytes]
    kept = {i.file for i in site} | {i.file for i in by_category} | titled
    return Holdout(
        site=tuple(site),
        categories=tuple(sorted(chosen)),
        by_category=tuple(by_category),
        by_title=tuple(by_title),
        excluded=tuple(i for i in items if i.file not in kept),
    )
