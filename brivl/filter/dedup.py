"""Dedup over the rows that passed the per-row rules, visited in a stable order.

:class:`HammingIndex` finds stored 64-bit hashes within a Hamming distance ``t`` without
comparing against all of them (multi-index hashing): each hash is cut into ``m`` chunks, and
with ``r = t // m``, ``m * (r + 1) > t``, so any hash within ``t`` of the query is within
``r`` bits of it on at least one chunk. A query looks up, per chunk, the buckets of every
value within ``r`` bits of its own chunk and compares only the rows found there. ``m`` is
picked for the expected number of stored hashes: few long chunks probed widely for many
rows (for ``t = 8``: 9 exact 7-bit chunks up to ~1,600 rows, 5 chunks probed at radius 1
beyond, 3 chunks at radius 2 from ~100,000 rows), so a query stays far below ``O(n)``.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from math import comb

from brivl.filter.image import thumb_difference

BITS = 64


class HammingIndex:
    """Stored 64-bit hashes, queried for those within ``max_distance`` bits."""

    def __init__(self, max_distance: int, expected_size: int = 1000) -> None:
        if not 0 <= max_distance < BITS // 2:
            raise ValueError(f"max_distance must be in 0..{BITS // 2 - 1}, got {max_distance}")
        self.max_distance = max_distance
        parts = _best_parts(max_distance, expected_size)
        radius = max_distance // parts
        edges = [round(i * BITS / parts) for i in range(parts + 1)]
        self._chunks = []  # (shift, mask, flips within `radius` bits of a chunk value)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            width = hi - lo
            self._chunks.append((BITS - hi, (1 << width) - 1, _flips(width, radius)))
        # per chunk: chunk value -> (hashes, ids) of the rows stored under it, as flat arrays
        self._tables: list[dict[int, tuple[array, array]]] = [{} for _ in self._chunks]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, value: int) -> int:
        """Store ``value``; return its id (ids count up from 0 in insertion order)."""
        ident = self._size
        self._size += 1
        for table, (shift, mask, _) in zip(self._tables, self._chunks, strict=True):
            key = (value >> shift) & mask
            entry = table.get(key)
            if entry is None:
                entry = table[key] = (array("Q"), array("L"))
            entry[0].append(value)
            entry[1].append(ident)
        return ident

    def query(self, value: int) -> list[tuple[int, int]]:
        """``(id, distance)`` of every stored hash within ``max_distance``, by id."""
        found: dict[int, int] = {}
        limit = self.max_distance
        for table, (shift, mask, flips) in zip(self._tables, self._chunks, strict=True):
            chunk = (value >> shift) & mask
            # probe all neighbouring chunk values at C speed; only filled buckets come back
            for hashes, ids in filter(None, map(table.get, [chunk ^ f for f in flips])):
                for stored, ident in zip(hashes, ids, strict=True):
                    distance = (stored ^ value).bit_count()
                    if distance <= limit:
                        found[ident] = distance
        return sorted(found.items())


def _best_parts(max_distance: int, expected_size: int) -> int:
    """Chunk count with the least expected work per query: bucket probes (~0.5 us each) plus
    rows compared (~0.3 us each, assuming uniformly spread hashes)."""

    def cost(parts: int) -> float:
        width = BITS // parts
        probes = parts * sum(comb(width, k) for k in range(max_distance // parts + 1))
        return 0.5 * probes + 0.3 * expected_size * probes / 2**width

    return min(range(1, max_distance + 2), key=cost)


def _flips(width: int, radius: int) -> list[int]:
    """Every ``width``-bit mask with at most ``radius`` bits set."""
    return [sum(1 << b for b in bits) for r in range(radius + 1)
            for bits in combinations(range(width), r)]


@dataclass(frozen=True, slots=True)
class Candidate:
    """What dedup needs of one row that passed the per-row rules (all small)."""

    order: tuple  # stable sort key: (candidate id, source file, row)
    ident: str
    sha256: bytes  # digest of the image bytes
    phash: tuple[int, int, int]
    url: str | None
    caption_key: bytes


class Deduplicator:
    """Decide keep / reject for candidates fed in their stable order.

    Rows are compared against *kept* rows only, so of a group of copies the first is kept.
    ``thumb_of(i)`` returns the thumbnail of the i-th candidate fed in (kept ones are asked
    again later, so it should read from storage, not memory).
    """

    def __init__(self, config, thumb_of: Callable[[int], bytes], expected_size: int = 1000) -> None:
        self.config = config
        self.thumb_of = thumb_of
        self.seen_ids: set[str] = set()
        self.by_sha: dict[bytes, str] = {}
        self.by_url: dict[str, str] = {}
        self.captions: dict[bytes, tuple[int, str]] = {}  # caption -> (kept rows, first id)
        self.kept_pos: list[int] = []  # candidate position of each kept row
        self.kept_ids: list[str] = []
        distance = config.near_dup_max_distance
        self.indexes = (
            [HammingIndex(distance, expected_size) for _ in range(3)] if distance >= 0 else []
        )
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
        if cand.ident in self.seen_ids:
            return "duplicate_key", f"candidate id {cand.ident!r} appears more than once"
        if cfg.dedup_exact and cand.sha256 in self.by_sha:
            return "duplicate_image", f"same image bytes as {self.by_sha[cand.sha256]}"
        if self.indexes:
            near = self._near(cand, pos)
            if near is not None:
                return "near_duplicate", near
        if cfg.dedup_url and cand.url and cand.url in self.by_url:
            return "duplicate_url", f"same url as {self.by_url[cand.url]}"
        cap = cfg.max_identical_captions
        count, first = self.captions.get(cand.caption_key, (0, ""))
        if cap and count >= cap:
            return "caption_cap", f"{count} kept rows already have this caption (first: {first})"
        return None

    def _near(self, cand: Candidate, pos: int) -> str | None:
        matches: dict[int, int] = {}
        for channel, index in enumerate(self.indexes):
            for kept, distance in index.query(cand.phash[channel]):
                matches[kept] = min(distance, matches.get(kept, distance))
        if not matches:
            return None
        thumb = self.thumb_of(pos)
        limit = self.config.near_dup_max_pixel_diff
        for kept in sorted(matches):
            diff = thumb_difference(self.thumb_of(self.kept_pos[kept]), thumb)
            if diff <= limit:
                return (
                    f"near-duplicate of {self.kept_ids[kept]} (pHash distance "
                    f"{matches[kept]}, thumbnail difference {diff:.0f})"
                )
        return None

    def _keep(self, cand: Candidate, pos: int) -> None:
        self.by_sha.setdefault(cand.sha256, cand.ident)
        if cand.url:
            self.by_url.setdefault(cand.url, cand.ident)
        count, first = self.captions.get(cand.caption_key, (0, cand.ident))
        self.captions[cand.caption_key] = (count + 1, first)
        for channel, index in enumerate(self.indexes):
            index.add(cand.phash[channel])
        self.kept_pos.append(pos)
        self.kept_ids.append(cand.ident)
