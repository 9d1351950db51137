"""Faces: the shipped detector finds a real face, blur hides it, and the filter's three policies
keep the accounting exact; the shard rows carry the boxes and the pair's sources (page URL,
declared licence, copyright, the downloaded bytes' sha256).

Photos, all shipped inside packages the project installs (nothing is downloaded):

- ``matplotlib/mpl-data/sample_data/grace_hopper.jpg`` (matplotlib): Rear Admiral Grace
  Hopper, an official US Navy photograph, public domain. One frontal face.
- ``sklearn/datasets/images/china.jpg`` and ``flower.jpg`` (scikit-learn): a temple and a
  flower by Flickr users danielbuechele and vultilion, CC BY 2.0 (the package's README.txt).
  No people.

bench/faces.py measures recall and false positives on a larger labelled set
(bench/RESULTS.md, "Data: faces").
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sklearn.datasets
from PIL import Image

from brivl.filter import FilterConfig, run_filter
from brivl.filter.faces import FaceDetector, blur_boxes
from brivl.shard import read_shard_table, write_shards

CAPTION = "A portrait photograph of a person in uniform"
LICENCES = {"grace_hopper.jpg": "public domain (US Navy)",
            "china.jpg": "https://creativecommons.org/licenses/by/2.0/",
            "flower.jpg": "https://creativecommons.org/licenses/by/2.0/"}


def photo(name: str) -> bytes:
    if name == "grace_hopper.jpg":
        return (Path(matplotlib.get_data_path()) / "sample_data" / name).read_bytes()
    return (Path(sklearn.datasets.__file__).parent / "images" / name).read_bytes()


def size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def detail_energy(data: bytes, box: tuple[int, int, int, int]) -> float:
    """Mean absolute difference between neighbouring pixels inside ``box`` (grey)."""
    x, y, w, h = box
    grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float64)[y:y + h, x:x + w]
    return float(np.abs(np.diff(grey, axis=1)).mean())


def test_detector_finds_the_face_and_nothing_in_photos_without_people() -> None:
    detector = FaceDetector()
    hopper = photo("grace_hopper.jpg")
    (box,) = detector.boxes(hopper, *size(hopper))
    x, y, w, h = box
    width, height = size(hopper)
    assert 0.2 < w / width < 0.7 and 0.8 < w / h < 1.25  # one face-sized square box ...
    assert 0.25 < (x + w / 2) / width < 0.75 and (y + h / 2) / height < 0.6  # ... upper middle
    for name in ("china.jpg", "flower.jpg"):
        data = photo(name)
        assert detector.boxes(data, *size(data)) == [], name


def test_a_blurred_face_has_no_detail_left_and_is_not_found_again() -> None:
    detector = FaceDetector()
    hopper = photo("grace_hopper.jpg")
    boxes = detector.boxes(hopper, *size(hopper))
    blurred = blur_boxes(hopper, boxes)
    assert size(blurred) == size(hopper) and blurred[:3] == b"\xff\xd8\xff"
    assert detail_energy(blurred, boxes[0]) < 0.2 * detail_energy(hopper, boxes[0])
    assert detector.boxes(blurred, *size(blurred)) == []
    below = (0, boxes[0][1] + boxes[0][3] * 2, size(hopper)[0], 60)  # the uniform, far below
    assert detail_energy(blurred, below) == pytest.approx(detail_energy(hopper, below), rel=0.15)


def test_a_tiny_image_is_not_searched() -> None:
    hopper = Image.open(io.BytesIO(photo("grace_hopper.jpg"))).resize((30, 35))
    out = io.BytesIO()
    hopper.save(out, "JPEG")
    assert FaceDetector().boxes(out.getvalue(), 30, 35) == []  # shorter side < min_face


def corpus(folder: Path) -> Path:
    rows = [{"candidate_id": name.split(".")[0], "url": f"http://photos.test/{name}",
             "caption": CAPTION, "status": "success", "jpg": photo(name),
             "page_url": "http://photos.test/index.html", "licence": LICENCES[name],
             "licence_source": "image_link", "copyright": "(c) photos.test"}
            for name in ("grace_hopper.jpg", "china.jpg", "flower.jpg")]
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    return folder


def kept_rows(out: Path) -> dict[str, dict]:
    table = pa.concat_tables(pq.read_table(p) for p in sorted((out / "kept").glob("*.parquet")))
    return {row["candidate_id"]: row for row in table.to_pylist()}


@pytest.mark.parametrize("policy", ["blur", "drop", "off"])
def test_face_policies_in_the_filter_and_the_shard_rows(tmp_path: Path, policy: str) -> None:
    source = corpus(tmp_path / "in")
    result = run_filter(source, tmp_path / "out", FilterConfig(face_policy=policy, languages=[]))
    report = result.report
    kept = kept_rows(tmp_path / "out")
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "part-00000.parquet").to_pylist()
    assert report["kept"] + report["rejected"] == report["input_rows"] == 3
    assert len(kept) == report["kept"] and len(rejected) == report["rejected"]
    original = photo("grace_hopper.jpg")
    if policy == "drop":
        assert sorted(kept) == ["china", "flower"]
        assert [(r["candidate_id"], r["rule"]) for r in rejected] == [("grace_hopper", "face")]
        assert rejected[0]["detail"].startswith("1 face(s) at [[")
        assert report["by_rule"]["face"] == report["faces"]["dropped"] == 1
    else:
        assert sorted(kept) == ["china", "flower", "grace_hopper"] and not rejected
        hopper = kept["grace_hopper"]
        assert hopper["source_sha256"] == hashlib.sha256(original).hexdigest()
        assert hopper["sha256"] == hashlib.sha256(hopper["jpg"]).hexdigest()
    if policy == "blur":
        hopper = kept["grace_hopper"]
        boxes = json.loads(hopper["face_boxes"])
        assert hopper["face_count"] == len(boxes) == 1 and hopper["jpg"] != original
        assert detail_energy(hopper["jpg"], tuple(boxes[0])) < 0.2 * detail_energy(
            original, tuple(boxes[0]))
        assert [kept[k]["face_count"] for k in ("china", "flower")] == [0, 0]
        assert kept["china"]["jpg"] == photo("china.jpg")  # no face: the bytes as downloaded
        assert report["faces"] == {"policy": "blur", "searched": 3, "images_with_faces": 1,
                                   "faces": 1, "blurred": 1, "dropped": 0, "unsearchable": 0}
        write_shards(tmp_path / "out", tmp_path / "shards", {"val_fraction": 0})
        rows = {r["key"]: r for r in read_shard_table(tmp_path / "shards", "train").to_pylist()}
        assert rows["grace_hopper"]["face_count"] == 1
        assert json.loads(rows["grace_hopper"]["face_boxes"]) == boxes
        assert rows["grace_hopper"]["image"] == hopper["jpg"]
        assert rows["china"]["page_url"] == "http://photos.test/index.html"  # sources kept
        assert [(rows[k]["licence"], rows[k]["licence_source"], rows[k]["copyright"])
                for k in ("grace_hopper", "china")] == [
            (LICENCES["grace_hopper.jpg"], "image_link", "(c) photos.test"),
            (LICENCES["china.jpg"], "image_link", "(c) photos.test")]
        assert rows["china"]["source_sha256"] == rows["china"]["sha256"]  # not blurred
    if policy == "off":
        assert kept["grace_hopper"]["jpg"] == original
        assert {row["face_count"] for row in kept.values()} == {None}
        assert report["faces"]["searched"] == 0
