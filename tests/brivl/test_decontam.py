"""Evaluation decontamination: copies of eval images planted in the corpus are each found."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, ImageFilter

from brivl.filter import FilterConfig, run_filter
from brivl.filter.decontam import load_eval_images

CAPTION = "A smooth picture of soft colours on a plain ground"


def picture(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))


def encoded(image: Image.Image, kind: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def eval_dir(folder: Path) -> Path:
    """A retrieval set and a zero-shot set of three pictures each (seeds 1-3, 11-13)."""
    folder.mkdir()
    for name, seeds, extra in (("retrieval", (1, 2, 3), {"caption": ["a", "b", "c"]}),
                               ("zeroshot_images", (11, 12, 13), {"label": ["x", "y", "x"]})):
        images = [encoded(picture(s), "PNG") for s in seeds]
        pq.write_table(pa.table({"image": pa.array(images, pa.binary()), **extra}),
                       folder / f"{name}.parquet")
    return folder


def test_planted_copies_of_eval_images_are_each_found(tmp_path: Path) -> None:
    sets = eval_dir(tmp_path / "eval")
    planted = {  # candidate id -> the eval image it copies
        "p-exact": (encoded(picture(1), "PNG"), "retrieval image 0"),
        "p-jpeg": (encoded(picture(2), quality=70), "retrieval image 1"),
        "p-resized": (encoded(picture(3).resize((144, 120))), "retrieval image 2"),
        "p-bright": (encoded(ImageEnhance.Brightness(picture(12)).enhance(1.15)),
                     "zeroshot_images image 1"),
        "p-again": (encoded(picture(12), quality=85), "zeroshot_images image 1"),
    }
    rows = [{"candidate_id": f"c{i:02d}", "caption": f"{CAPTION} {i}", "jpg": encoded(picture(100 + i)),
             "url": f"http://c.test/{i}.jpg"} for i in range(20)]
    rows += [{"candidate_id": cid, "caption": f"{CAPTION} {cid}", "jpg": data,
              "url": f"http://c.test/{cid}"}
             for cid, (data, _) in planted.items()]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "00000.parquet")

    images = load_eval_images(sets)
    assert len(images) == 6 and images.per_set == {"retrieval": 3, "zeroshot_images": 3}
    result = run_filter(tmp_path / "in", tmp_path / "out", FilterConfig(languages=[]),
                        eval_images=images)
    report = result.report
    rejected = {r["candidate_id"]: r for r in
                pq.read_table(tmp_path / "out" / "rejected" / "part-00000.parquet").to_pylist()}
    assert {cid: r["rule"] for cid, r in rejected.items()} == dict.fromkeys(planted, "eval_overlap")
    for cid, (_, source) in planted.items():
        assert rejected[cid]["detail"].startswith(f"near-duplicate of eval {source} "), cid
    assert report["eval_overlap"] == {
        "eval_images": 6, "per_set": {"retrieval": 3, "zeroshot_images": 3}, "found": 5,
        "found_per_set": {"retrieval": 3, "zeroshot_images": 2}}
    assert report["by_rule"]["eval_overlap"] == 5
    assert report["kept"] == 20 and report["kept"] + report["rejected"] == report["input_rows"]

    plain = run_filter(tmp_path / "in", tmp_path / "plain", FilterConfig(languages=[]))
    assert plain.report["by_rule"]["eval_overlap"] == 0 and plain.report["kept"] == 24  # p-again
    #                                       is then a near-duplicate of p-bright's kept original
