"""The filter: each rule rejects its case by name, accounting adds up, output is deterministic."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from brivl.errors import SchemaError
from brivl.filter import (
    RULES,
    FilterConfig,
    detect_language,
    phash_bits,
    run_filter,
    thumb_difference,
)
from brivl.filter.dedup import Candidate, Deduplicator, NearGraph, best_parts, near_pairs
from brivl.filter.image import inspect, phashes
from brivl.filter.text import spam_pattern
from brivl.fingerprint import file_sha256

GOOD = "A red circle on the left of a plain background"


def picture(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A smooth random picture: distinct per seed, with structure a perceptual hash can see."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def pair(cid: str, caption: str = GOOD, image: bytes | None = None, **extra) -> dict:
    """One img2dataset-shaped row (status success unless given)."""
    data = image if image is not None else jpeg(picture(int(cid.strip("c") or 0) + 1000))
    row = {
        "key": f"k{cid}", "candidate_id": cid, "url": f"http://site.test/img/{cid}.jpg",
        "caption": caption, "status": "success", "error_message": None, "width": 96,
        "height": 80, "original_width": None, "original_height": None, "exif": None,
        "sha256": None, "jpg": data, "page_url": "http://site.test/a.html",
    }
    row.update(extra)
    return row


def write_shards(folder: Path, shards: list[list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(shards):
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{i:05d}.parquet")
    return folder


def outcomes(out: Path) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(kept id -> caption, rejected id -> (rule, detail)); a repeated id keeps its last row."""
    kept = pa.concat_tables(pq.read_table(p) for p in sorted((out / "kept").glob("*.parquet")))
    rej = pa.concat_tables(pq.read_table(p) for p in sorted((out / "rejected").glob("*.parquet")))
    kept_map = dict(zip(kept["candidate_id"].to_pylist(), kept["caption"].to_pylist(), strict=True))
    rej_map = {
        r["candidate_id"]: (r["rule"], r["detail"]) for r in rej.to_pylist()
    }
    return kept_map, rej_map


def test_each_rule_rejects_its_case_and_names_it(tmp_path: Path) -> None:
    original = picture(1)
    orig_bytes = jpeg(original)
    brighter = jpeg(ImageEnhance.Brightness(original).enhance(1.15), quality=70)
    truncated = jpeg(picture(2))[:400]
    cases = [
        pair("c01", image=orig_bytes),  # the original every copy refers to
        pair("c02", image=b"<html>not an image</html>"),
        pair("c03", image=truncated),
        pair("c04", image=jpeg(picture(4, (24, 20)))),
        pair("c05", image=jpeg(picture(5, (300, 70)))),
        pair("c06", caption=""),
        pair("c07", caption="word " * 300),
        pair("c08", caption="A photo of the BlockWord in the park"),
        pair("c09", caption="Shoes for sale, buy now and get the best price"),
        pair("c10", caption="der Hund und die Katze sind nicht auf dem Sofa"),
        pair("c11", image=orig_bytes, url="http://mirror.test/copy.jpg"),
        pair("c12", image=brighter, url="http://mirror.test/bright.jpg"),
        pair("c13", url="http://site.test/img/c01.jpg"),
        pair("c14", caption="same words here", image=jpeg(picture(14))),
        pair("c15", caption="Same  words here!", image=jpeg(picture(15))),
        pair("c16", caption="same words here", image=jpeg(picture(16))),
        pair("c17", caption="tiny and blockword", image=jpeg(picture(17, (20, 20)))),
        pair("c18", caption="cafÃ© tables on the corner of the street"),
        pair("c19", status="failed_to_download", jpg=None),
        pair("c20", caption="Ein Bild", image=jpeg(picture(20, (300, 300))),
             original_width=30, original_height=30),
        pair("c21", caption="sale sale sale sale sale shoes"),
        pair("c22", caption="tiny and blockword", image=jpeg(picture(22, (400, 40)))),
        pair("c23", caption="caf\ufffd tables on the corner of the street"),  # bytes lost
    ]
    dup_key = pair("c01", caption="another picture under the same id", image=jpeg(picture(99)))
    inp = write_shards(tmp_path / "in", [cases[:11], cases[11:] + [dup_key]])
    cfg = FilterConfig(max_identical_captions=2)
    report = run_filter(inp, tmp_path / "out", cfg).report
    kept, rejected = outcomes(tmp_path / "out")
    expect = {
        "c02": "undecodable", "c03": "undecodable", "c04": "image_too_small",
        "c05": "aspect_ratio", "c06": "caption_too_short", "c07": "caption_too_long",
        "c08": "blocklist", "c09": "spam", "c10": "language", "c11": "duplicate_image",
        "c12": "near_duplicate", "c13": "duplicate_url", "c16": "caption_cap",
        "c17": "image_too_small",  # also blocklisted: the FIRST failing rule is recorded
        "c20": "image_too_small",  # judged on the original size, not the resized bytes
        "c21": "spam",
        "c22": "aspect_ratio",  # also small and blocklisted: aspect is checked first
        "c23": "garbled_text",  # U+FFFD: no repair can restore the lost bytes
        "c01": "duplicate_key",  # its second row; the first (sorted by source, row) is kept
    }
    assert {cid: rule for cid, (rule, _) in rejected.items()} == expect
    assert set(kept) == {"c01", "c14", "c15", "c18"}
    assert kept["c01"] == GOOD
    assert "c01" in rejected["c11"][1] and "c01" in rejected["c12"][1] and "c01" in rejected["c13"][1]
    assert "blockword" in rejected["c08"][1]
    assert "2 kept rows" in rejected["c16"][1]
    assert "U+FFFD" in rejected["c23"][1]
    assert kept["c18"] == "café tables on the corner of the street"  # ftfy repair is kept
    assert report["not_success_rows"] == 1 and "c19" not in kept and "c19" not in rejected
    assert report["input_rows"] == len(cases) + 1 - 1  # + the duplicate key, - the failed one
    assert report["kept"] == 4 and report["rejected"] == len(expect)


def test_accounting_adds_up_and_report_matches_files(tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = []
    for i in range(60):
        caption = rng.choice([GOOD, "", "buy now cheap", "blockword here twice", "ok caption one"])
        image = jpeg(picture(i % 45, rng.choice([(96, 80), (30, 30), (300, 60)])))
        rows.append(pair(f"c{i:03d}", caption=caption, image=image))
    inp = write_shards(tmp_path / "in", [rows[:25], rows[25:40], rows[40:]])
    result = run_filter(inp, tmp_path / "out", {})
    report = result.report
    kept = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "out/kept").glob("*.parquet"))
    rej = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "out/rejected").glob("*.parquet"))
    assert kept.num_rows + rej.num_rows == 60 == report["input_rows"]
    ids = kept["candidate_id"].to_pylist() + rej["candidate_id"].to_pylist()
    assert sorted(ids) == sorted(r["candidate_id"] for r in rows)  # each row exactly once
    assert report["kept"] == kept.num_rows and report["rejected"] == rej.num_rows
    by_rule = {rule: rej["rule"].to_pylist().count(rule) for rule in RULES}
    assert by_rule == report["by_rule"]
    assert set(rej["rule"].to_pylist()) <= set(RULES) and min(by_rule.values()) == 0
    assert sum(f["kept"] + f["rejected"] for f in report["files"]) == 60
    assert result.row_counts == {"input": 60, "kept": kept.num_rows, "rejected": rej.num_rows,
                                 "not_success": 0, "bad_input_files": 0}
    # the kept output carries what the shard stage needs, about the bytes it carries
    row = kept.slice(0, 1).to_pylist()[0]
    assert Image.open(io.BytesIO(row["jpg"])).size == (row["width"], row["height"])
    assert not list((tmp_path / "out").glob(".work"))


def test_output_is_deterministic_whatever_the_shard_order(tmp_path: Path) -> None:
    base = jpeg(picture(7))
    rows = [pair(f"c{i:03d}") for i in range(30)]
    # the copy with the smallest id sits in the LAST shard: it must be the one kept
    rows[29] = pair("a000", image=base)
    rows[3] = pair("z003", image=base)
    rows[10] = pair("z010", image=jpeg(ImageEnhance.Brightness(picture(7)).enhance(1.1), 75))
    inp = write_shards(tmp_path / "in", [rows[:10], rows[10:20], rows[20:]])
    run_filter(inp, tmp_path / "one", {}, workers=1)
    run_filter(inp, tmp_path / "two", {}, workers=2)  # shards scanned concurrently, any order
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.*"))
    for rel in files:
        assert file_sha256(tmp_path / "one" / rel) == file_sha256(tmp_path / "two" / rel), rel
    kept, rejected = outcomes(tmp_path / "one")
    assert "a000" in kept and rejected["z003"][0] == "duplicate_image"
    assert rejected["z010"][0] == "near_duplicate" and "a000" in rejected["z010"][1]


def test_plain_parquet_input_and_clear_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    table = pa.table({"key": ["x1", "x2"], "caption": [GOOD, "a second fine caption"],
                      "jpg": [jpeg(picture(1)), jpeg(picture(2))]})
    pq.write_table(table, plain / "mine.parquet")
    report = run_filter(plain, tmp_path / "out", {}).report
    assert report["kept"] == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"key": ["x"], "text": ["t"]}), bad / "b.parquet")
    with pytest.raises(ValueError, match=r"b\.parquet: missing column.*jpg.*caption"):
        run_filter(bad, tmp_path / "o2", {})
    with pytest.raises(ValueError, match=r"filter: unknown key\(s\) \['min_side'\]"):
        FilterConfig.from_dict({"min_side": 3})


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("caption", [3, 4], r"column 'caption' is int64; accepted: string"),
        ("original_width", ["96", "96"], r"column 'original_width' is string; accepted: an integer"),
        ("jpg", ["abc", "def"], r"column 'jpg' is string; accepted: binary"),
    ],
)
def test_column_types_are_schema_errors_naming_file_and_column(tmp_path: Path, column, values,
                                                               message) -> None:
    rows = [pair("c1"), pair("c2")]
    table = pa.Table.from_pylist(rows).drop_columns([column]).append_column(column, pa.array(values))
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "00000.parquet")
    with pytest.raises(SchemaError, match=rf"in/00000\.parquet: {message}"):
        run_filter(tmp_path / "in", tmp_path / "out", {})


def test_a_corrupt_input_file_is_recorded_and_the_others_are_filtered(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "in", [[pair("c1")], [pair("c2")], [pair("c3")]])
    broken = folder / "00001.parquet"
    broken.write_bytes(broken.read_bytes()[:-20])  # footer cut off
    result = run_filter(folder, tmp_path / "out", {})
    kept, _ = outcomes(tmp_path / "out")
    assert set(kept) == {"c1", "c3"}
    assert result.row_counts["bad_input_files"] == 1
    [bad] = result.report["bad_input_files"]
    assert bad["file"] == str(broken) and "ArrowInvalid" in bad["error"]


@pytest.mark.parametrize(("distance", "parts"), [(0, 1), (1, 2), (3, 4), (3, 2), (6, 7), (8, 9),
                                               (8, 5), (8, 3), (8, None)])
def test_near_pairs_finds_exactly_the_near_hashes(distance: int, parts: int | None) -> None:
    rng = np.random.default_rng(distance)
    stored = rng.integers(0, 2**63, 400, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    near = stored[:80].copy()  # neighbours at every distance up to distance + 2
    for k in range(len(near)):
        for bit in rng.choice(64, rng.integers(0, distance + 3), replace=False):
            near[k] ^= np.uint64(1) << np.uint64(int(bit))
    hashes = np.concatenate([stored, near, np.repeat(stored[:2], 30)])  # and 60 exact copies
    i, j, d = near_pairs(hashes, distance, parts=parts, block_pairs=500)  # many small blocks
    values = [int(h) for h in hashes]
    brute = [(a, b, (values[a] ^ values[b]).bit_count()) for b in range(len(values))
             for a in range(b) if (values[a] ^ values[b]).bit_count() <= distance]
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == brute
    assert len(brute) >= 930  # the copies alone give 2 * C(31, 2) pairs


def test_near_pairs_picks_wider_chunks_for_more_rows() -> None:
    assert [best_parts(8, n) for n in (10, 3_000, 1_000_000)] == [9, 5, 3]
    assert near_pairs(np.zeros(0, np.uint64), 8)[0].size == 0


def test_thousands_of_identical_hashes_keep_the_first_copy_and_one_other_picture() -> None:
    """Blank or placeholder pictures share one pHash: they collapse to one hash value (no
    quadratic pair list), each is compared with the few kept rows only, and a different
    picture that happens to share the hash is kept (its thumbnail differs)."""
    n = 3000
    blank = bytes([200]) * (32 * 32 * 3)
    other = np.random.default_rng(0).integers(0, 256, 32 * 32 * 3, dtype=np.uint8).tobytes()
    thumbs = [other if row == 5 else blank for row in range(n)]
    hashes = np.zeros((n, 3), np.uint64)
    hashes[7] = [1, 2, 3]  # a row 1-2 bits away on each channel
    graph = NearGraph(hashes, FilterConfig().near_dup_max_distance)
    assert [len(links) for links in graph.linked] == [2, 2, 2]  # value 0 and row 7's value
    judge = Deduplicator(FilterConfig(), thumbs.__getitem__, graph)
    verdicts = [judge.feed(Candidate((f"c{row:05d}",), f"c{row:05d}", bytes([row % 256, row // 256]),
                                     None, bytes([row % 256, row // 256])))
                for row in range(n)]
    kept = [row for row, verdict in enumerate(verdicts) if verdict is None]
    assert kept == [0, 5]
    assert {verdict[0] for verdict in verdicts if verdict} == {"near_duplicate"}
    assert "near-duplicate of c00000" in verdicts[7][1] and "distance 1" in verdicts[7][1]


def test_phash_is_imagehash_and_thumbnails_tell_copies_from_others() -> None:
    channel = np.asarray(picture(5, (32, 32)).convert("L"))
    assert phash_bits(channel) == int(str(imagehash.phash(Image.fromarray(channel))), 16)
    smalls = np.stack([np.asarray(picture(seed, (32, 32)).convert("RGB")) for seed in (5, 6, 7)])
    batched = phashes(smalls)  # the filter's batched path: the same bits per channel
    assert [[int(h) for h in row] for row in batched] == [
        [phash_bits(small[:, :, c]) for c in range(3)] for small in smalls]
    original = picture(5, (160, 120))
    a = inspect(jpeg(original), 10**8)
    smaller = original.resize((144, 108), Image.BILINEAR)
    copy = inspect(jpeg(ImageEnhance.Brightness(smaller).enhance(1.12), 70), 10**8)
    other = inspect(jpeg(picture(6, (160, 120))), 10**8)
    assert min((x ^ y).bit_count() for x, y in zip(a.phash, copy.phash, strict=True)) <= 8
    limit = FilterConfig().near_dup_max_pixel_diff
    assert thumb_difference(a.thumb, copy.thumb) < limit < thumb_difference(a.thumb, other.thumb)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("A dog sitting in the garden with the children", "en"),
        ("Der Hund sitzt mit den Kindern im Garten", "de"),
        ("Le chien est dans le jardin avec les enfants", "fr"),
        ("一只狗坐在花园里", "zh"),
        ("Собака сидит в саду", "ru"),
        ("red circle", "und"),
        ("12345 !!!", "und"),
    ],
)
def test_language_guess(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_same_layout_in_other_colours_is_not_a_near_duplicate(tmp_path: Path) -> None:
    def disc(colour: tuple[int, int, int], brightness: float = 1.0) -> bytes:
        image = Image.new("RGB", (128, 96), (230, 230, 225))
        ImageDraw.Draw(image).ellipse((40, 20, 90, 70), fill=colour)
        return jpeg(ImageEnhance.Brightness(image).enhance(brightness), 80)

    red, blue = disc((215, 35, 35)), disc((35, 70, 215))
    rows = [pair("c1", image=red), pair("c2", image=blue), pair("c3", image=disc((215, 35, 35), 1.1))]
    run_filter(write_shards(tmp_path / "in", [rows]), tmp_path / "out", {})
    kept, rejected = outcomes(tmp_path / "out")
    assert set(kept) == {"c1", "c2"}
    assert rejected["c3"][0] == "near_duplicate" and "c1" in rejected["c3"][1]


@pytest.mark.parametrize(
    ("text", "matched"),
    [("Buy now while it lasts", "Buy now"), ("rebuy now", None), ("a sidebar", "bar"),
     ("visit www.example.org", "www."), ("food", "foo"), ("tofu", None)],
)
def test_spam_patterns_sharing_a_word_boundary_match_as_written(text: str, matched: str | None):
    """The combined regex factors out a leading \\b, but only where that keeps each pattern's
    meaning: ``\\bfoo|bar`` is ``(\\bfoo)|(bar)``, so "sidebar" matches it."""
    patterns = (r"\bbuy (it )?now\b", r"\bfoo|bar", r"\bwww\.")
    match = spam_pattern(patterns).search(text)
    assert (match.group(0) if match else None) == matched
    # and the same as searching the patterns one by one
    alone = [m for p in patterns if (m := re.search(p, text, re.IGNORECASE))]
    assert bool(alone) == bool(match)
