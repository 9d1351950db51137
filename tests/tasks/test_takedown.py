"""Take-downs on real files and a real MLflow registry: rows gone from the shards and the
index, model versions trained on them tagged, everything else byte-identical."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import faiss
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from brivl import manifest
from brivl.datasheet import build_datasheet, write_datasheet
from brivl.errors import InputError
from brivl.takedown import Request

PRIMARY = "retrieval/mean_recall"


def _shards(corpus, root: Path, start: int, n_train: int, n_val: int) -> Path:
    splits = {"train": corpus.rows(n_train, start), "val": corpus.rows(n_val, start + n_train)}
    for split, items in splits.items():
        (root / split).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(items, schema=corpus.SCHEMA),
                       root / split / "part-00000.parquet", row_group_size=4)
    write_datasheet(root, build_datasheet(root))  # as the shard stage does, before its manifest
    manifest.write_manifest(root, stage="shard", config={"row_group_rows": 4}, inputs=[f"f{start}"],
                            code_version="test", row_counts={"train": n_train, "val": n_val,
                                                             "total": n_train + n_val})
    return root


def _index(root: Path, checkpoint: Path, shards: Path) -> Path:
    from brivl.inference import load
    from brivl.retrieval.build import IndexConfig, build_retrieval_index, checkpoint_identity

    config = IndexConfig(batch_size=8, rows_per_file=6, index_key="Flat")
    summary = build_retrieval_index(load(checkpoint, device="cpu"), shards, root, config)
    manifest.write_manifest(
        root, stage="index", config=config.to_dict(), code_version="test",
        inputs=[checkpoint_identity(checkpoint), manifest.read_manifest(shards)["hash"]],
        row_counts={"indexed": summary["rows"], "rejected": summary["rejected"]})
    return root


def _bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in manifest.data_files(root)}


def _version(checkpoint: Path, shards: Path, name: str) -> int:
    """A registry version with the lineage tags register sets (without logging the pyfunc,
    which the retrain below does through the real registration)."""
    from tasks import register

    client = mlflow.MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    tags = {f"brivl.{k}": v for k, v in register.lineage_tags(checkpoint, shards).items()}
    return int(client.create_model_version(name, str(checkpoint), tags=tags).version)


def test_takedown_removes_rows_tags_models_and_leaves_the_rest(corpus, tmp_path: Path) -> None:
    from flows.cli import main
    from tasks.takedown import PENDING_TAG

    trained = _shards(corpus, tmp_path / "shards-a", 0, 13, 3)
    other = _shards(corpus, tmp_path / "shards-b", 500, 5, 2)
    checkpoint = corpus.make_checkpoint(tmp_path / "ckpt")
    index = _index(tmp_path / "index", checkpoint, trained)
    name = f"takedown-{uuid.uuid4().hex[:8]}"
    on_a, on_b = _version(checkpoint, trained, name), _version(checkpoint, other, name)

    rows = corpus.shard_rows(trained)
    by_url, by_sha = rows[3], rows[8]  # both in train/part-00000.parquet
    (tmp_path / "urls.txt").write_text(f"# a notice\n{by_url['url']}\n\n")
    (tmp_path / "sha.txt").write_text(by_sha["sha256"].upper() + "\n")
    old_a, old_index = manifest.read_manifest(trained), manifest.read_manifest(index)
    before_a, before_b, before_index = _bytes(trained), _bytes(other), _bytes(index)

    from brivl.model.trunk_store import TrunkStore, default_root

    cached = TrunkStore(default_root() / "fingerprint")  # features of every image, cached
    cached.put("image", "a" * 32, torch.zeros(4, 2, 2))
    cached.flush()
    argv = ["takedown", "--urls", str(tmp_path / "urls.txt"), "--sha256", str(tmp_path / "sha.txt"),
            "--shards", str(trained), "--shards", str(other), "--index", str(index),
            "--model-name", name]
    assert main(argv) == 0
    assert not list(default_root().glob("*/*.npz"))  # cleared with the rows

    # the shards: exactly those rows gone, every other row and column as it was
    gone = {by_url["key"], by_sha["key"]}
    assert corpus.shard_rows(trained) == [r for r in rows if r["key"] not in gone]
    after_a = _bytes(trained)
    assert after_a["val/part-00000.parquet"] == before_a["val/part-00000.parquet"]
    assert after_a["train/part-00000.parquet"] != before_a["train/part-00000.parquet"]
    assert pq.ParquetFile(trained / "train/part-00000.parquet").metadata.row_group(0).num_rows == 4
    assert _bytes(other) == before_b  # no match there: not rewritten
    new_a = manifest.verify(trained)  # checksums recomputed
    note = new_a["extra"]["takedown"]
    assert note["supersedes"] == old_a["hash"] != new_a["hash"] and note["removed"] == 2
    assert note["removed_by_file"] == {"train/part-00000.parquet": 2}
    assert new_a["row_counts"] == {"train": 11, "val": 3, "total": 14}
    assert manifest.manifest_key(new_a) == manifest.manifest_key(old_a)  # still the same stage run
    assert json.loads((trained / f".superseded-{old_a['hash']}.json").read_text()) == old_a
    _assert_datasheet(trained, {"train": 11, "val": 3, "total": 14}, removed=2)

    # the index: rows gone from the metadata, the embeddings and both faiss indices
    new_index = manifest.verify(index)
    assert new_index["extra"]["takedown"]["supersedes"] == old_index["hash"]
    meta = pq.read_table(index / "embeddings" / "metadata").column("key").to_pylist()
    assert gone.isdisjoint(meta) and len(meta) == 14 == new_index["row_counts"]["indexed"]
    for modality in ("image", "text"):
        assert faiss.read_index(str(index / "index" / f"{modality}.index")).ntotal == 14
    after_index = _bytes(index)
    untouched = [f for f in before_index if f.startswith("embeddings/") and f.endswith("_2.npy")]
    assert untouched and all(after_index[f] == before_index[f] for f in untouched)
    from brivl.inference import load
    from brivl.retrieval.service import SearchIndex

    search = SearchIndex.open(index, load(checkpoint, device="cpu"))
    found = search.query(text=by_url["caption"], modality="text", k=20)
    assert {r["key"] for r in found}.isdisjoint(gone) and len(found) == 14

    # the registry: the version trained on the old shards is tagged, the other is not
    client = mlflow.MlflowClient()
    assert client.get_model_version(name, str(on_a)).tags[PENDING_TAG] == "2"
    assert PENDING_TAG not in client.get_model_version(name, str(on_b)).tags

    # a retrain on the new shards registers a version without the tag
    from tasks import register

    ckpt2 = corpus.make_checkpoint(tmp_path / "ckpt2", seed=3)
    retrained = register.register_model(ckpt2, {PRIMARY: 0.1}, PRIMARY,
                                        register.lineage_tags(ckpt2, trained), name)["version"]
    assert PENDING_TAG not in client.get_model_version(name, str(retrained)).tags

    # a second take-down follows the chain: the index (built on the first manifest) and the
    # first version count again; the retrained version is tagged for the first time
    (tmp_path / "urls2.txt").write_text(rows[14]["url"] + "\n")  # a val row
    assert main(["takedown", "--urls", str(tmp_path / "urls2.txt"), "--shards", str(trained),
                 "--index", str(index), "--model-name", name]) == 0
    assert client.get_model_version(name, str(on_a)).tags[PENDING_TAG] == "3"
    assert client.get_model_version(name, str(retrained)).tags[PENDING_TAG] == "1"
    chain = manifest.read_manifest(trained)["extra"]["takedown"]
    assert chain["supersedes"] == new_a["hash"] and chain["earlier"]["supersedes"] == old_a["hash"]
    assert manifest.read_manifest(index)["row_counts"]["indexed"] == 13
    _assert_datasheet(trained, {"train": 11, "val": 2, "total": 13}, removed=3)


def _assert_datasheet(shards: Path, rows: dict[str, int], removed: int) -> None:
    """The datasheet was written again: the rows left, a funnel ending with the take-downs,
    both files in the new manifest."""
    sheet = json.loads((shards / "datasheet.json").read_text())
    assert sheet["rows"] == rows
    assert sum(sheet["caption_words"].values()) == rows["total"] == sum(sheet["domains"].values())
    assert sheet["funnel"][-2:] == [
        {"stage": "shard", "in": 16, "out": 16, "rejected": {}},
        {"stage": "takedown", "in": 16, "out": rows["total"], "rejected": {"takedown": removed}}]
    text = (shards / "datasheet.md").read_text()
    assert f"{rows['total']} image-text pairs" in text
    assert f"| takedown | 16 | {rows['total']} | takedown {removed} |" in text
    assert {"datasheet.json", "datasheet.md"} <= set(manifest.verify(shards)["files"])


def test_bad_request_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    (tmp_path / "sha.txt").write_text("abc123\n")
    assert main(["takedown", "--sha256", str(tmp_path / "sha.txt")]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "64 hexadecimal" in err
    (tmp_path / "urls.txt").write_text("ftp://x/y.jpg\n")
    with pytest.raises(InputError, match="http"):
        Request.from_files(urls=tmp_path / "urls.txt")
    assert main(["takedown"]) == 2
