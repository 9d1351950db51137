"""Shards: fixed rows, stable split, JPEG re-encode, streaming readers, resume after SIGKILL."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from brivl.errors import SchemaError
from brivl.fingerprint import file_sha256
from brivl.shard import (
    SLOW_ENV,
    ShardConfig,
    iter_shard_batches,
    read_shard_table,
    shard_files,
    split_of,
    write_shards,
)

ROOT = Path(__file__).resolve().parents[2]


def encoded(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def make_input(folder: Path, n: int = 60, files: int = 3, png_every: int = 0) -> list[str]:
    """A folder of kept-pairs Parquet files (as the filter writes, minus its manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"cand-{i:04d}" for i in range(n)]
    per = -(-n // files)
    for f in range(files):
        chunk = range(f * per, min(n, (f + 1) * per))
        pq.write_table(
            pa.table({
                "candidate_id": [ids[i] for i in chunk],
                "url": [f"http://site.test/{i}.jpg" for i in chunk],
                "caption": [f"caption number {i}" for i in chunk],
                "jpg": [encoded(i, "PNG" if png_every and i % png_every == 0 else "JPEG")
                        for i in chunk],
            }),
            folder / f"part-{f:05d}.parquet",
        )
    return ids


def all_rows(out: Path) -> dict[str, list[dict]]:
    return {s: read_shard_table(out, s).to_pylist() for s in ("train", "val")}


def test_split_is_a_stable_function_of_the_key() -> None:
    keys = [f"k{i}" for i in range(4000)]
    splits = [split_of(k, 0.1) for k in keys]
    assert splits == [split_of(k, 0.1) for k in keys]
    assert 300 < splits.count("val") < 500
    assert all(split_of(k, 0.0) == "train" for k in keys[:100])
    # growing the fraction only moves keys from train to val, never back
    assert all(split_of(k, 0.2) == "val" for k, s in zip(keys, splits, strict=True) if s == "val")
    assert [split_of(k, 0.1, "other-salt") for k in keys] != splits


def test_shards_have_fixed_rows_stable_order_and_describe_their_bytes(tmp_path: Path) -> None:
    ids = make_input(tmp_path / "in", n=60, png_every=7)
    cfg = ShardConfig(rows_per_shard=8, val_fraction=0.25, row_group_rows=3)
    result = write_shards(tmp_path / "in", tmp_path / "out", cfg)
    rows = all_rows(tmp_path / "out")
    expected = {s: [k for k in ids if split_of(k, 0.25, cfg.split_salt) == s] for s in rows}
    for split, split_rows in rows.items():
        assert [r["key"] for r in split_rows] == expected[split]  # input order, nothing lost
        sizes = [pq.ParquetFile(p).metadata.num_rows for p in shard_files(tmp_path / "out", split)]
        assert sizes[:-1] == [8] * (len(sizes) - 1) and 0 < sizes[-1] <= 8
        assert sum(sizes) == result.counts[split] == len(expected[split])
    first = pq.ParquetFile(shard_files(tmp_path / "out", "train")[0])
    assert first.metadata.num_row_groups == 3  # 8 rows in groups of 3: streamable pieces
    assert first.schema_arrow.names == ["key", "image", "caption", "width", "height", "sha256", "url",
                                        "page_url", "source_sha256", "face_count", "face_boxes",
                                        "licence", "licence_source", "copyright",
                                        "brivl_score"]
    assert first.schema_arrow.field("brivl_score").type == pa.float32()
    for row in rows["train"] + rows["val"]:
        assert row["image"][:3] == b"\xff\xd8\xff"  # PNG inputs were re-encoded to JPEG
        assert row["sha256"] == hashlib.sha256(row["image"]).hexdigest()
        assert Image.open(io.BytesIO(row["image"])).size == (row["width"], row["height"]) == (40, 32)
    assert result.reencoded == len([i for i in range(60) if i % 7 == 0])
    assert not (tmp_path / "out" / "_manifest.json").exists()  # the stage task writes it, last


def test_batches_stream_in_exact_sizes(tmp_path: Path) -> None:
    make_input(tmp_path / "in", n=45)
    write_shards(tmp_path / "in", tmp_path / "out", {"rows_per_shard": 10, "val_fraction": 0.0})
    batches = list(iter_shard_batches(tmp_path / "out", "train", 7, columns=["key", "caption"]))
    assert [b.num_rows for b in batches] == [7] * 6 + [3]  # batches span shard files
    assert batches[0].schema.names == ["key", "caption"]
    assert [k for b in batches for k in b.column("key").to_pylist()] == [
        f"cand-{i:04d}" for i in range(45)
    ]
    with pytest.raises(ValueError, match="split must be one of"):
        list(iter_shard_batches(tmp_path / "out", "test", 7))


def test_resume_after_sigkill_gives_the_rows_of_an_uninterrupted_run(tmp_path: Path) -> None:
    make_input(tmp_path / "in", n=60, png_every=9)
    config = {"rows_per_shard": 4, "val_fraction": 0.2}
    write_shards(tmp_path / "in", tmp_path / "clean", config)

    script = (
        "import sys; from brivl.shard import write_shards; "
        f"write_shards(sys.argv[1], sys.argv[2], {config!r})"
    )
    env = dict(os.environ, **{SLOW_ENV: "0.4"})
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "in"), str(tmp_path / "killed")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    train = tmp_path / "killed" / "train"
    while time.monotonic() < deadline and len(list(train.glob("part-*.parquet"))) < 3:
        assert proc.poll() is None, "the writer ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in train.glob("part-*.parquet"))
    assert 3 <= len(done_before) < len(list((tmp_path / "clean" / "train").glob("*.parquet")))
    (train / ".part-00013.parquet.tmp").write_bytes(b"half a shard")  # debris of a kill

    result = write_shards(tmp_path / "in", tmp_path / "killed", config)
    assert result.skipped >= len(done_before)
    assert all_rows(tmp_path / "killed") == all_rows(tmp_path / "clean")
    clean = sorted(p.relative_to(tmp_path / "clean") for p in (tmp_path / "clean").rglob("*.parquet"))
    resumed = sorted(p.relative_to(tmp_path / "killed") for p in (tmp_path / "killed").rglob("*"))
    assert [p for p in resumed if p.suffix == ".parquet"] == clean
    assert not list((tmp_path / "killed").rglob("*.tmp"))
    for rel in clean:
        assert file_sha256(tmp_path / "killed" / rel) == file_sha256(tmp_path / "clean" / rel)


def _shard_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): file_sha256(p) for p in sorted(out.glob("*/part-*.parquet"))}


def test_shards_depend_on_the_rows_not_their_order_or_the_listing(tmp_path: Path) -> None:
    """Issue 16 item 7: the same input sharded twice, and the same rows with each file's rows
    in another order (as img2dataset writes them, in completion order) and the files created
    in another order, give byte-identical shards."""
    make_input(tmp_path / "in", n=60, files=3)
    (tmp_path / "shuffled").mkdir()
    for number, path in enumerate(sorted((tmp_path / "in").glob("*.parquet"), reverse=True)):
        table = pq.read_table(path)
        perm = np.random.default_rng(number).permutation(table.num_rows)
        assert perm.tolist() != sorted(perm.tolist())
        pq.write_table(table.take(perm), tmp_path / "shuffled" / path.name)
    config = {"rows_per_shard": 8, "val_fraction": 0.25}
    for source, out in (("in", "once"), ("in", "twice"), ("shuffled", "reordered")):
        write_shards(tmp_path / source, tmp_path / out, config)
    once = _shard_digests(tmp_path / "once")
    assert len([name for name in once if name.startswith("train/")]) >= 5
    assert once == _shard_digests(tmp_path / "twice") == _shard_digests(tmp_path / "reordered")
    keys = read_shard_table(tmp_path / "once", "train")["key"].to_pylist()
    assert keys == sorted(keys)  # within a file by key; this input's files hold key ranges


def test_changed_plan_discards_old_shards(tmp_path: Path) -> None:
    make_input(tmp_path / "in", n=30)
    write_shards(tmp_path / "in", tmp_path / "out", {"rows_per_shard": 4, "val_fraction": 0.0})
    write_shards(tmp_path / "in", tmp_path / "out", {"rows_per_shard": 10, "val_fraction": 0.0})
    assert len(shard_files(tmp_path / "out", "train")) == 3
    assert len(read_shard_table(tmp_path / "out", "train")) == 30


def rejected_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "rejected" / "part-00000.parquet").to_pylist()


def test_bad_rows_are_rejected_with_a_reason_and_shards_stay_full(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table({"key": ["a", "b", "", "c", "d", "e"], "caption": list("xyzuvw"),
                      "jpg": [encoded(1), encoded(2), encoded(3), None, b"not an image",
                              encoded(5)]})
    pq.write_table(table, folder / "one.parquet")
    pq.write_table(table.slice(1, 1), folder / "two.parquet")  # key b again
    result = write_shards(folder, tmp_path / "out", {"rows_per_shard": 2, "val_fraction": 0.0})
    reasons = {(r["source"], r["row"]): r["reason"] for r in rejected_rows(tmp_path / "out")}
    assert reasons == {("one.parquet", 2): "no_key", ("one.parquet", 3): "no_image",
                       ("one.parquet", 4): "undecodable", ("two.parquet", 0): "duplicate_key"}
    assert result.row_counts == {"train": 3, "val": 0, "total": 3, "rejected": 4,
                                 "bad_input_files": 0}
    assert [len(t) for t in map(pq.read_table, shard_files(tmp_path / "out", "train"))] == [2, 1]
    assert [r["key"] for r in read_shard_table(tmp_path / "out", "train").to_pylist()] == [
        "a", "b", "e"]


def test_a_truncated_input_file_is_recorded_and_the_rest_is_sharded(tmp_path: Path) -> None:
    make_input(tmp_path / "in", n=30, files=3)
    broken = tmp_path / "in" / "part-00001.parquet"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    result = write_shards(tmp_path / "in", tmp_path / "out", {"val_fraction": 0.0})
    assert result.counts == {"train": 20, "val": 0}
    assert [b["file"] for b in result.bad_input_files] == [str(broken)]
    assert "part-00001.parquet" in str(result.bad_input_files) and result.bad_input_files[0]["error"]
    [row] = rejected_rows(tmp_path / "out")
    assert row["reason"] == "bad_input_file" and row["source"] == "part-00001.parquet"


def test_input_schema_errors_name_the_file_and_the_column(tmp_path: Path) -> None:
    cases = {
        "nojpg": ({"key": ["a"], "caption": ["x"]}, r"nojpg/b\.parquet: missing column.*jpg or image"),
        "strjpg": ({"key": ["a"], "caption": ["x"], "jpg": ["abc"]},
                   r"strjpg/b\.parquet: column 'jpg' is string; accepted: binary"),
        "intcap": ({"key": ["a"], "caption": [3], "jpg": [encoded(1)]},
                   r"intcap/b\.parquet: column 'caption' is int64; accepted: string"),
        "strwidth": ({"key": ["a"], "caption": ["x"], "jpg": [encoded(1)], "width": ["40"]},
                     r"strwidth/b\.parquet: column 'width' is string; accepted: an integer"),
        "strscore": ({"key": ["a"], "caption": ["x"], "jpg": [encoded(1)], "brivl_score": ["0.3"]},
                     r"strscore/b\.parquet: column 'brivl_score' is string; accepted: a floating"),
    }
    for name, (columns, message) in cases.items():
        (tmp_path / name).mkdir()
        pq.write_table(pa.table(columns), tmp_path / name / "b.parquet")
        with pytest.raises(SchemaError, match=message):
            write_shards(tmp_path / name, tmp_path / f"out-{name}")


def test_ray_data_streams_the_shards(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    make_input(tmp_path / "in", n=48)
    write_shards(tmp_path / "in", tmp_path / "out",
                 {"rows_per_shard": 8, "val_fraction": 0.25, "row_group_rows": 4})
    expected = read_shard_table(tmp_path / "out", "train", columns=["key"])["key"].to_pylist()
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=os.environ["RAY_TMPDIR"],
             configure_logging=False, log_to_driver=False)
    try:
        ds = ray.data.read_parquet(str(tmp_path / "out" / "train"))
        sizes, keys = [], []
        for batch in ds.iter_batches(batch_size=5, batch_format="pyarrow"):
            sizes.append(batch.num_rows)
            keys.extend(batch.column("key").to_pylist())
            assert batch.schema.names[:3] == ["key", "image", "caption"]
        assert sorted(keys) == sorted(expected)
        assert len(sizes) > 1 and max(sizes) <= 5
        assert ds.count() == len(expected)
    finally:
        ray.shutdown()
