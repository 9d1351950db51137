"""Dedup over the rows that passed the per-row rules, visited in a stable order.

Near-duplicate *candidates* are found for all rows at once by :func:`near_pairs`
(multi-index hashing, vectorised): each 64-bit hash is cut into ``m`` chunks and, with
``r = t // m``, ``m * (r + 1) > t``, so two hashes within ``t`` bits agree within ``r`` bits
on at least one chunk. Per chunk, rows are joined with the rows whose chunk value differs by
at most ``r`` bits, and only those pairs are compared. ``m`` is picked for the number of
rows (few long chunks probed widely for many rows), so the work grows far slower than
``n**2``. :class:`NearGraph` runs it over the *distinct* hash values of each channel, and
:class:`Deduplicator` then visits the rows in order and compares a row only with the kept
rows of its linked values.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from math import comb
from typing import NamedTuple

import numpy as np

from brivl.filter.image import thumb_difference

BITS = 64
_M1, _M2, _M4, _H01 = (np.uint64(v) for v in (0x5555555555555555, 0x3333333333333333,
                                                0x0F0F0F0F0F0F0F0F, 0x0101010101010101))


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (SWAR; numpy < 2 has no bitwise_count)."""
    x = values - ((values >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return ((x * _H01) >> np.uint64(56)).astype(np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int, *, parts: int | None = None,
               block_pairs: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of ``hashes`` (uint64, length n) within ``max_distance`` bits.

    Returns ``(i, j, distance)`` int64 arrays sorted by ``(j, i)``. ``parts``: chunks per
    hash (default :func:`best_parts`). At most about ``block_pairs`` candidate pairs are held
    at a time, whatever the hashes.
    """
    if not 0 <= max_distance < BITS // 2:
        raise ValueError(f"max_distance must be in 0..{BITS // 2 - 1}, got {max_distance}")
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    parts = parts or best_parts(max_distance, n)
    radius = max_distance // parts
    edges = [round(k * BITS / parts) for k in range(parts + 1)]
    found = [np.zeros(0, np.int64)]  # pair codes j * n + i
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        chunk = (hashes >> np.uint64(BITS - hi)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(chunk, kind="stable")
        values, starts, counts = np.unique(chunk[order], return_index=True, return_counts=True)
        for flip in _flips(hi - lo, radius):
            for left, right in _joined_groups(values, starts, counts, flip, block_pairs):
                i, j = order[left], order[right]
                i, j = np.minimum(i, j), np.maximum(i, j)
                near = (i != j) & (popcount(hashes[i] ^ hashes[j]) <= max_distance)
                found.append(j[near] * n + i[near])
    codes = np.unique(np.concatenate(found))  # sorted; a pair may be found on several chunks
    i, j = codes % max(n, 1), codes // max(n, 1)
    return i, j, popcount(hashes[i] ^ hashes[j])


def _joined_groups(values, starts, counts, flip: int, block_pairs: int):
    """Positions (into the sorted order) of all pairs of rows whose chunk values differ by
    ``flip`` - each group crossed with its partner group (with itself for flip 0) - in
    blocks of at most ``block_pairs`` pairs."""
    partner = values ^ np.uint64(flip)
    where = np.minimum(np.searchsorted(values, partner), len(values) - 1)
    has = (values[where] == partner) & (values <= partner)  # each unordered group pair once
    if flip == 0:
        has &= counts > 1
    a, b = np.flatnonzero(has), where[has]
    sizes = counts[a] * counts[b]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for first in range(0, int(bounds[-1]), block_pairs):
        pair = np.arange(first, min(first + block_pairs, int(bounds[-1])))
        group = np.searchsorted(bounds, pair, "right") - 1
        local = pair - bounds[group]
        width = counts[b[group]]
        yield starts[a[group]] + local // width, starts[b[group]] + local % width


class NearGraph:
    """Which rows may be near-duplicates, per hash channel, at the level of distinct hash
    values: identical hashes (blank or placeholder pictures) collapse to one value, so a
    thousand copies cost one entry, not half a million row pairs.

    ``links(channel, value(channel, row))`` gives ``(value, bits)`` for the values whose rows
    are candidates for ``row``: other values within ``max_distance`` bits, and its own value
    when other rows share it; rows whose value has no links are never candidates of anything.
    """

    def __init__(self, hashes: np.ndarray, max_distance: int) -> None:
        self.value_of: list[np.ndarray] = []  # per channel: row -> distinct value index
        self.linked: list[dict[int, list[tuple[int, int]]]] = []  # value -> [(value, bits)]
        for channel in range(hashes.shape[1]):
            values, value_of, counts = np.unique(hashes[:, channel], return_inverse=True,
                                                 return_counts=True)
            links: dict[int, list[tuple[int, int]]] = {
                v: [(v, 0)] for v in np.flatnonzero(counts > 1).tolist()
            }
            i, j, d = near_pairs(values, max_distance)
            for a, b, bits in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
                links.setdefault(a, []).append((b, bits))
                links.setdefault(b, []).append((a, bits))
            self.value_of.append(value_of)
            self.linked.append(links)

    @property
    def channels(self) -> int:
        return len(self.value_of)

    def value(self, channel: int, row: int) -> int:
        return int(self.value_of[channel][row])

    def links(self, channel: int, value: int) -> list[tuple[int, int]]:
        return self.linked[channel].get(value, [])


def best_parts(max_distance: int, rows: int) -> int:
    """Chunk count with the least expected work: per chunk and flip a fixed cost (~200
    element operations of numpy call overhead) and an O(rows) join, plus the candidate pairs
    compared (uniformly spread hashes)."""

    def cost(parts: int) -> float:
        width = BITS // parts
        flips = sum(comb(width, k) for k in range(max_distance // parts + 1))
        return parts * flips * (200 + rows + rows * rows / 2 ** (width + 1))

    return min(range(1, max_distance + 2), key=cost)


def _flips(width: int, radius: int) -> list[int]:
    """Every ``width``-bit mask with at most ``radius`` bits set."""
    return [sum(1 << b for b in bits) for r in range(radius + 1)
            for bits in combinations(range(width), r)]


class Candidate(NamedTuple):
    """What dedup needs of one row that passed the per-row rules (all small)."""

    order: tuple  # stable sort key: (candidate id, source file, row)
    ident: str
    sha256: bytes  # digest of the image bytes
    url: str | None
    caption_key: bytes


class Deduplicator:
    """Decide keep / reject for candidates fed in their stable order.

    Rows are compared against *kept* rows only, so of a group of copies the first is kept.
    ``near`` (:class:`NearGraph` over the candidates in feeding order) proposes near-duplicate
    candidates by pHash; ``thumb_of(i)`` returns the thumbnail of the i-th candidate, which
    confirms them (:func:`~brivl.filter.image.thumb_difference`). Kept rows are filed under
    their hash values, so a row is compared only with kept rows of linked values - few, as
    near copies of a kept row are not kept.
    """

    def __init__(self, config, thumb_of: Callable[[int], bytes],
                 near: NearGraph | None = None,
                 eval_check: Callable[[int], str | None] | None = None) -> None:
        self.config = config
        self.thumb_of = thumb_of
        self.near = near
        self.eval_check = eval_check  # position -> why it matches an eval image, or None
        self.seen_ids: set[str] = set()
        self.by_sha: dict[bytes, str] = {}
        self.by_url: dict[str, str] = {}
        self.captions: dict[bytes, tuple[int, str]] = {}  # caption -> (kept rows, first id)
        self.kept: dict[int, str] = {}  # position -> id, of kept rows that may be near others
        channels = near.channels if near is not None else 0
        self.kept_by_value: list[dict[int, list[int]]] = [{} for _ in range(channels)]
        self.fed = 0

    def feed(self, cand: Candidate) -> tuple[str, str] | None:
        """None when kept, else ``(rule, detail)``."""
        pos = self.fed
        self.fed += 1
        verdict = self._judge(cand, pos)
        if verdict is None:
            self._keep(cand, pos)
        self.seen_ids.add(cand.ident)
        return verdict

    def _judge(self, cand: Candidate, pos: int) -> tuple[str, str] | None:
        cfg = self.config
        if self.eval_check is not None and (why := self.eval_check(pos)):
            return "eval_overlap", why
        if cand.ident in self.seen_ids:
            return "duplicate_key", f"candidate id {cand.ident!r} appears more than once"
        if cfg.dedup_exact and cand.sha256 in self.by_sha:
            return "duplicate_image", f"same image bytes as {self.by_sha[cand.sha256]}"
        if self.near is not None:
            near = self._near(pos)
            if near is not None:
                return "near_duplicate", near
        if cfg.dedup_url and cand.url and cand.url in self.by_url:
            return "duplicate_url", f"same url as {self.by_url[cand.url]}"
        cap = cfg.max_identical_captions
        count, first = self.captions.get(cand.caption_key, (0, ""))
        if cap and count >= cap:
            return "caption_cap", f"{count} kept rows already have this caption (first: {first})"
        return None

    def _near(self, pos: int) -> str | None:
        matches: dict[int, int] = {}  # kept row -> least pHash distance on any channel
        for channel, kept_by_value in enumerate(self.kept_by_value):
            for value, bits in self.near.links(channel, self.near.value(channel, pos)):
                for row in kept_by_value.get(value, ()):
                    matches[row] = min(bits, matches.get(row, bits))
        if not matches:
            return None
        thumb = self.thumb_of(pos)
        limit = self.config.near_dup_max_pixel_diff
        for row, distance in sorted(matches.items()):  # the earliest kept row first
            diff = thumb_difference(self.thumb_of(row), thumb)
            if diff <= limit:
                return (
                    f"near-duplicate of {self.kept[row]} (pHash distance "
                    f"{distance}, thumbnail difference {diff:.0f})"
                )
        return None

    def _keep(self, cand: Candidate, pos: int) -> None:
        self.by_sha.setdefault(cand.sha256, cand.ident)
        if cand.url:
            self.by_url.setdefault(cand.url, cand.ident)
        count, first = self.captions.get(cand.caption_key, (0, cand.ident))
        self.captions[cand.caption_key] = (count + 1, first)
        for channel, kept_by_value in enumerate(self.kept_by_value):
            value = self.near.value(channel, pos)
            if self.near.links(channel, value):  # another row may ever ask for this one
                kept_by_value.setdefault(value, []).append(pos)
                self.kept[pos] = cand.ident
