"""ImageFolder trees, CSVs of image paths and webdataset shards as eval sets; bad rows recorded."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from brivl.evaluate import EvalSetError, evaluate_sets, read_eval_set
from brivl.evaluate.formats import detect, set_files
from brivl.evaluate.runner import resolve_sets

CLASSES = ["blue", "green", "red"]  # sorted, as ImageFolder orders folders


@pytest.fixture
def image_folder(tmp_path: Path, helpers) -> Path:
    """3 classes x 4 images (2 train, 2 test), plus a corrupt image and a stray text file."""
    jpeg, _ = helpers
    root = tmp_path / "colours"
    for split in ("train", "test"):
        for colour in CLASSES:
            folder = root / split / colour
            folder.mkdir(parents=True)
            for i in range(2):
                (folder / f"{colour}{i}.jpg").write_bytes(jpeg(colour))
    (root / "test" / "red" / "broken.png").write_bytes(b"not an image")
    (root / "train" / "blue" / "notes.txt").write_text("hello")
    (root / "train" / "blue" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    return root


@pytest.fixture
def caption_csv(tmp_path: Path, helpers) -> Path:
    """5 rows over 4 images: one image with two rows, one missing file, one corrupt image."""
    jpeg, _ = helpers
    pics = tmp_path / "pics"
    pics.mkdir()
    for colour in ("red", "green"):
        (pics / f"{colour}.jpg").write_bytes(jpeg(colour))
    (pics / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "blue.jpg").write_bytes(jpeg("blue"))
    path = tmp_path / "flickr.csv"
    path.write_text(
        "filepath,caption\n"
        "pics/red.jpg,a red square\n"
        "pics/gone.jpg,a missing picture\n"
        "pics/green.jpg,a green square\n"
        "pics/corrupt.jpg,a broken picture\n"
        f"{tmp_path / 'blue.jpg'},a blue square\n"
        "pics/red.jpg,\"something red, again\"\n"
        "pics/green.jpg,too,many,fields\n"
    )
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def webdataset(tmp_path: Path, helpers) -> Path:
    """Two shards of CLIP_benchmark-style samples (jpg + cls), classnames and templates."""
    jpeg, _ = helpers
    root = tmp_path / "wds_colours"
    root.mkdir()
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n{c}\n")
    samples = [[("s0", "red"), ("s1", "green"), ("s2", "blue")],
               [("s3", "red"), ("s4", "blue"), ("s5", "green")]]
    for n, shard in enumerate(samples):
        with tarfile.open(root / f"{n}.tar", "w") as tar:
            for key, colour in shard:
                _add(tar, f"{key}.jpg", jpeg(colour))
                _add(tar, f"{key}.cls", str(CLASSES.index(colour)).encode())
                if key == "s3":  # would be unpickled by webdataset's default decoders
                    _add(tar, "s3.pyd", b"\x80\x04 pickled")
            if n == 1:
                _add(tar, "s6.jpg", jpeg("red"))
                _add(tar, "s6.cls", b"7")  # no such class
                _add(tar, "s7.cls", b"0")  # no image
                link = tarfile.TarInfo("s8.jpg")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(link)
    return root


def test_image_folder_classes_labels_split_and_skips(image_folder: Path) -> None:
    es = read_eval_set(image_folder, name="colours")
    assert es.kind == "image_classification" and es.classes == CLASSES
    assert len(es) == 12 and es.labels.tolist() == [0, 0, 1, 1, 2, 2] * 2
    assert es.is_test.tolist() == [True] * 6 + [False] * 6  # test/ sorts before train/
    reasons = {s["row"]: s["reason"] for s in es.skipped}
    assert set(reasons) == {"test/red/broken.png", "train/blue/notes.txt"}
    assert "cannot identify image" in reasons["test/red/broken.png"]
    assert "not an image file" in reasons["train/blue/notes.txt"]
    assert es.templates is None


def test_image_folder_classes_json_renames_and_templates(image_folder: Path) -> None:
    (image_folder / "classes.json").write_text(json.dumps({
        "classes": {"red": "crimson", "green": "lime"},  # blue/ is not listed
        "templates": ["a {c} thing", "{}"],
    }))
    es = read_eval_set(image_folder)
    assert es.classes == ["crimson", "lime"] and es.templates == ["a {} thing", "{}"]
    assert len(es) == 8 and sorted(set(es.labels.tolist())) == [0, 1]
    not_listed = [s for s in es.skipped if "is not in" in s["reason"]]
    assert len(not_listed) == 4 and all(s["row"].split("/")[1] == "blue" for s in not_listed)


def test_bad_template_names_the_file(image_folder: Path) -> None:
    (image_folder / "classes.json").write_text(json.dumps({"classes": CLASSES,
                                                           "templates": ["a {name}"]}))
    with pytest.raises(EvalSetError, match=r"classes\.json: template 'a \{name\}' cannot be"):
        read_eval_set(image_folder)


def test_csv_of_paths_merges_captions_and_records_bad_rows(caption_csv: Path) -> None:
    es = read_eval_set(caption_csv)
    assert es.kind == "retrieval" and es.name == "flickr" and len(es) == 3
    assert es.captions == [["a red square", "something red, again"], ["a green square"],
                           ["a blue square"]]
    reasons = {s["row"]: s["reason"] for s in es.skipped}
    assert set(reasons) == {1, 3, "line 8"}
    assert "image file not found" in reasons[1] and "gone.jpg" in reasons[1]
    assert "cannot identify image" in reasons[3]
    assert reasons["line 8"] == "4 fields, expected 2"
    assert read_eval_set(caption_csv, max_rows=2).captions == [["a red square"]]


def test_parquet_of_paths_and_tsv_are_retrieval_sets(caption_csv: Path, helpers) -> None:
    _, write = helpers
    pq_path = write(caption_csv.with_name("paths.parquet"),
                    {"image_path": ["pics/red.jpg", "pics/green.jpg"],
                     "captions": [["a red one", "red"], ["a green one"]]})
    es = read_eval_set(pq_path)
    assert es.captions == [["a red one", "red"], ["a green one"]] and not es.skipped
    tsv = caption_csv.with_name("t.tsv")
    tsv.write_text('\ufeffimage_path\tcaptions\npics/red.jpg\t["a, red", "b"]\npics/red.jpg\t[oops\n')
    es = read_eval_set(tsv)
    assert es.captions == [["a, red", "b"]]
    assert es.skipped[0]["row"] == 1 and "not a JSON list" in es.skipped[0]["reason"]


def test_csv_without_path_column_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption\nxyz,a caption\n")
    with pytest.raises(EvalSetError) as err:
        read_eval_set(bad)
    msg = str(err.value)
    assert str(bad) in msg and "cannot hold image bytes" in msg and "image_path" in msg


def test_webdataset_shards_read_safely(webdataset: Path) -> None:
    es = read_eval_set(webdataset)
    assert es.kind == "image_classification" and es.classes == CLASSES
    assert es.templates == ["a photo of a {}.", "{}"]
    assert len(es) == 6 and es.labels.tolist() == [2, 1, 0, 2, 0, 1]
    assert es.is_test is None
    reasons = {s["row"]: s["reason"] for s in es.skipped}
    assert set(reasons) == {"1.tar:s6", "1.tar:s7"}
    assert "'7' is not a class index in 0..2" in reasons["1.tar:s6"]
    assert "no image member" in reasons["1.tar:s7"]
    note = " ".join(es.notes)
    assert "'.pyd (pickle, not loaded)': 1" in note and "'non-regular member': 1" in note


def test_webdataset_split_folders_retrieval_and_broken_shard(tmp_path: Path, helpers) -> None:
    jpeg, _ = helpers
    root = tmp_path / "wds_caps"
    (root / "test").mkdir(parents=True)
    (root / "dataset_type.txt").write_text("retrieval\n")
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for colour in ("red", "green"):
            _add(tar, f"{colour}.png", jpeg(colour))
            _add(tar, f"{colour}.txt", f"a {colour} square\nsomething {colour}\n".encode())
    (root / "test" / "1.tar").write_bytes(b"garbage" * 200)
    es = read_eval_set(root)
    assert es.kind == "retrieval" and len(es) == 2 and es.is_test.tolist() == [True, True]
    assert es.captions[1] == ["a green square", "something green"]
    assert es.skipped[0]["row"] == "test/1.tar" and "unreadable tar" in es.skipped[0]["reason"]
    (root / "dataset_type.txt").write_text("multilabel\n")
    with pytest.raises(EvalSetError, match=r"dataset_type\.txt: dataset type 'multilabel'"):
        read_eval_set(root)


def test_resolve_sets_detects_each_format(
    tmp_path: Path, image_folder: Path, caption_csv: Path, webdataset: Path, eval_dir: Path
) -> None:
    assert detect(image_folder) == "imagefolder" and detect(webdataset) == "webdataset"
    assert resolve_sets(str(image_folder)) == {"colours": image_folder}
    assert resolve_sets(caption_csv) == {"flickr": caption_csv}
    # eval_dir (the Parquet fixture) is tmp_path itself: all kinds side by side
    got = resolve_sets(eval_dir)
    assert got == {
        "retrieval": eval_dir / "retrieval.parquet",
        "zeroshot_images": eval_dir / "zeroshot_images.parquet",
        "zeroshot_text": eval_dir / "zeroshot_text.parquet",
        "vqa": eval_dir / "vqa.parquet",
        "flickr": caption_csv,
        "colours": image_folder,
        "wds_colours": webdataset,
    }
    assert caption_csv.parent / "pics" / "gone.jpg" in set_files(caption_csv)
    assert webdataset / "1.tar" in set_files(webdataset)
    assert image_folder / "test" / "red" / "red0.jpg" in set_files(image_folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalSetError, match="neither \\*.tar shards nor class folders"):
        read_eval_set(empty)
    with pytest.raises(EvalSetError, match="no such file or directory"):
        resolve_sets(tmp_path / "nowhere")


def test_formats_score_right_with_colour_encoder(
    encoder, image_folder: Path, caption_csv: Path, webdataset: Path
) -> None:
    sets = {"folder": image_folder, "caps": caption_csv, "shards": webdataset}
    m = evaluate_sets(encoder, sets, {"image_templates": ["a {} thing"]}).metrics
    assert m["folder/top1"] == 1.0 and m["folder/n"] == 12 and m["folder/skipped"] == 2
    assert m["shards/top1"] == 1.0 and m["shards/linear_probe_acc"] == 1.0
    assert m["caps/i2t_r1"] == 1.0 and m["caps/n_captions"] == 4 and m["caps/skipped"] == 3


@pytest.fixture(scope="module")
def tiny_encoder():
    import torch

    from brivl.inference import Encoder
    from brivl.model import create_model
    from brivl.model.tokenizer import train_tokenizer

    torch.manual_seed(0)
    words = [f"a photo of a {c}." for c in CLASSES] + ["a red square", "something green"]
    model = create_model("brivl-tiny", tokenizer=train_tokenizer(words, 200, min_frequency=1))
    return Encoder(model, device="cpu")


def test_evaluate_sets_with_untrained_brivl_tiny(
    tiny_encoder, image_folder: Path, caption_csv: Path, webdataset: Path
) -> None:
    sets = {"folder": image_folder, "caps": caption_csv, "shards": webdataset}
    rep = evaluate_sets(tiny_encoder, sets, {"batch_size": 8})
    m = rep.metrics
    scores = ["folder/top1", "folder/linear_probe_acc", "shards/top1",
              "shards/linear_probe_acc", "caps/i2t_r1", "caps/t2i_r5", "caps/mean_recall"]
    for key in scores:
        assert key in m and 0.0 <= m[key] <= 1.0, key
    assert np.isfinite(list(m.values())).all()
    assert m["folder/n_classes"] == 3 and m["shards/n"] == 6 and m["caps/n"] == 3
    assert [s["row"] for s in rep.skipped["caps"]] == [1, 3, "line 8"]


def test_plain_image_folder_without_splits(tmp_path: Path, helpers) -> None:
    jpeg, _ = helpers
    root = tmp_path / "plain"
    for colour in ("red", "blue"):
        (root / colour / "nested").mkdir(parents=True)
        (root / colour / "nested" / "a.jpg").write_bytes(jpeg(colour))
        (root / colour / "b.webp").write_bytes(jpeg(colour))  # JPEG bytes: decoded by content
    (root / "zeroshot_classification_templates.txt").write_text("a {c} one\n")
    es = read_eval_set(root)
    assert es.classes == ["blue", "red"] and es.labels.tolist() == [0, 0, 1, 1]
    assert es.is_test is None and es.templates == ["a {} one"] and not es.skipped
    assert read_eval_set(root, max_rows=3).labels.tolist() == [0, 0, 1]
