"""Face detector accuracy (bench/RESULTS.md section "Data: faces", issue 14 item 1).

    python bench/faces.py [--cache DIR] [--clipart DIR] [--no-record]

The filter's detector (:class:`brivl.filter.faces.FaceDetector`, default settings) on a small
labelled set of real photos that ship inside packages - nothing here is a web download:

* Python wheels the project installs: matplotlib's ``grace_hopper.jpg`` (US Navy photo,
  public domain); scikit-learn's ``china.jpg`` and ``flower.jpg`` (Flickr, CC BY 2.0).
* Debian packages, fetched by this script with ``apt-get download`` and unpacked with
  ``dpkg-deb -x`` into ``--cache`` (default ``$BRIVL_HOME/cache/face-photos``):
  ``python3-skimage`` (scikit-image's data: astronaut, camera, chelsea, coffee, ... CC0 or
  public domain as each function's docstring states; ``lfw_subset.npy``: 100 face and 100
  background 25x25 crops of Labeled Faces in the Wild, a research set without a licence)
  and ``opencv-doc`` (OpenCV's ``samples/data`` images, under Debian's copyright file's
  ``Files: *``: Apache-2.0 AND BSD-3-Clause; the photographers of messi5.jpg and
  basketball1.png are not named).

Faces were labelled by hand as boxes (x, y, w, h) in the photo's pixels; a found box that
overlaps a labelled one with IoU >= 0.3 is a hit, any other found box a false positive.
The LFW crops are scaled to 64 px and framed by 8 px of repeated edge (the cascade needs a
margin around a face). With ``--clipart`` (the demo's OpenClipArt tree, as
``brivl demo`` fetches it), the share of drawings the detector flags, people and not.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.results import replace_section  # noqa: E402
from brivl.env import project_home  # noqa: E402
from brivl.filter.faces import FaceDetector  # noqa: E402

PACKAGES = ("python3-skimage", "opencv-doc")
SKIMAGE = "usr/lib/python3/dist-packages/skimage/data"
OPENCV = "usr/share/doc/opencv-doc/examples/data"
# (where, file, labelled face boxes): "wheel:" paths are inside installed Python packages
PEOPLE = [
    (SKIMAGE, "astronaut.png", [(176, 67, 95, 95)]),  # Eileen Collins, NASA, public domain
    (SKIMAGE, "camera.png", [(150, 80, 110, 115)]),  # a photographer in profile, CC0
    ("wheel:matplotlib", "mpl-data/sample_data/grace_hopper.jpg", [(152, 105, 222, 222)]),
    (OPENCV, "messi5.jpg", [(226, 93, 39, 39)]),  # a footballer, face 7% of the width
    (OPENCV, "basketball1.png", [(72, 90, 43, 43)]),  # two players, one face visible
    (OPENCV, "left01.jpg", []),  # a person whose face a chessboard hides
]
NO_PEOPLE = (
    [(SKIMAGE, f) for f in ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                             "hubble_deep_field.jpg", "horse.png", "brick.png", "grass.png",
                             "gravel.png", "retina.jpg", "moon.png", "coins.png", "page.png",
                             "ihc.png", "color.png")]
    + [("wheel:sklearn", f"datasets/images/{f}") for f in ("china.jpg", "flower.jpg")]
    + [(OPENCV, f) for f in ("baboon.jpg", "chicky_512.png", "fruits.jpg", "home.jpg",
                             "building.jpg", "butterfly.jpg", "apple.jpg", "orange.jpg",
                             "aero1.jpg", "aero3.jpg", "leuvenA.jpg", "squirrel_cls.jpg",
                             "starry_night.jpg", "board.jpg", "smarties.png", "aloeL.jpg",
                             "graf1.png", "HappyFish.jpg", "licenseplate_motion.jpg",
                             "Blender_Suzanne1.jpg", "box_in_scene.png", "ela_original.jpg",
                             "pic4.png", "rubberwhale1.png", "stuff.jpg", "cards.png")]
)


def fetch_photos(cache: Path) -> Path:
    """The Debian packages unpacked under ``cache/tree`` (downloaded once)."""
    tree, stamp = cache / "tree", cache / "_fetched"
    if stamp.is_file():
        return tree
    debs = cache / "debs"
    shutil.rmtree(cache, ignore_errors=True)
    debs.mkdir(parents=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        deb.unlink()  # ~115 MB of archives; the unpacked tree is what is read
    stamp.write_text("\n".join(PACKAGES))
    return tree


def resolve(tree: Path, where: str, name: str) -> Path:
    if where.startswith("wheel:"):
        module = __import__(where.split(":", 1)[1])
        return Path(module.__file__).parent / name
    return tree / where / name


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


def detect_file(detector: FaceDetector, path: Path) -> tuple[list, float]:
    """Boxes found in an image file (as JPEG bytes, like a downloaded pair) and CPU ms."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=95)
    start = time.process_time()
    boxes = detector.boxes(out.getvalue(), *rgb.size)
    return boxes, (time.process_time() - start) * 1000


def photos(detector: FaceDetector, tree: Path) -> tuple[str, dict]:
    rows, labelled, hits, false_boxes, ms = [], 0, 0, 0, []
    for where, name, faces in PEOPLE:
        boxes, cost = detect_file(detector, resolve(tree, where, name))
        matched = sum(any(iou(f, b) >= 0.3 for b in boxes) for f in faces)
        extra = sum(not any(iou(f, b) >= 0.3 for f in faces) for b in boxes)
        labelled, hits, false_boxes = labelled + len(faces), hits + matched, false_boxes + extra
        ms.append(cost)
        rows.append(f"| {Path(name).name} | {len(faces)} | {matched} | {extra} |")
    flagged = []
    for where, name in NO_PEOPLE:
        boxes, cost = detect_file(detector, resolve(tree, where, name))
        ms.append(cost)
        if boxes:
            flagged.append(f"{Path(name).name} ({len(boxes)})")
    table = "\n".join(["| photo of people | faces labelled | found | false boxes |",
                       "|---|---|---|---|", *rows])
    stats = {"labelled": labelled, "hits": hits, "false_in_people": false_boxes,
             "negatives": len(NO_PEOPLE), "flagged": flagged, "ms": float(np.median(ms))}
    return table, stats


def lfw(detector: FaceDetector, tree: Path) -> tuple[int, int]:
    """(faces found of 100, backgrounds flagged of 100) on scikit-image's LFW subset."""
    crops = np.load(tree / SKIMAGE / "lfw_subset.npy")
    crops = np.clip(crops * 255, 0, 255).astype(np.uint8)
    found = []
    for crop in crops:
        grey = cv2.copyMakeBorder(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_CUBIC),
                                  8, 8, 8, 8, cv2.BORDER_REPLICATE)
        found.append(bool(detector.boxes_in_grey(grey)))
    return sum(found[:100]), sum(found[100:])


def clipart(detector: FaceDetector, root: Path, per_group: int) -> dict[str, tuple[int, int]]:
    """{group: (flagged, drawings)} for people drawings and as many others, as served."""
    from brivl.demo.openclipart import to_jpeg

    pngs = sorted(root.rglob("*.png"))
    people = [p for p in pngs if "people" in p.relative_to(root).parts[:1]]
    others = [p for p in pngs if p not in set(people)]
    rng = random.Random(0)
    out = {}
    for group, files in (("people", people), ("other categories", others)):
        files = rng.sample(files, min(per_group, len(files)))
        flagged = 0
        for path in files:
            data = to_jpeg(path, max_side=512)
            with Image.open(io.BytesIO(data)) as image:
                flagged += bool(detector.boxes(data, *image.size))
        out[group] = (flagged, len(files))
    return out


def summary(detector: FaceDetector, tree: Path) -> tuple[str, str]:
    """One line of figures for ``detector``, and its per-photo table."""
    table, stats = photos(detector, tree)
    faces, backgrounds = lfw(detector, tree)
    flagged = stats["flagged"]
    line = (
        f"| {detector.detect_side} px | {stats['hits']} of {stats['labelled']} "
        f"({stats['hits'] / stats['labelled']:.0%}) | {stats['false_in_people']} | "
        f"{len(flagged)} of {stats['negatives']} ({len(flagged) / stats['negatives']:.0%})"
        f"{': ' + ', '.join(flagged) if flagged else ''} | {faces}% | {backgrounds}% | "
        f"{stats['ms']:.1f} |"
    )
    return line, table


def report(tree: Path, clipart_root: Path | None, per_group: int) -> str:
    default = FaceDetector()
    rows, tables = zip(*(summary(d, tree) for d in (default, FaceDetector(detect_side=384))),
                       strict=True)
    lines = [
        f"Detector: OpenCV {cv2.__version__} `{default.cascade}` on a grey copy of at most "
        f"the given size (longer side), faces from {default.min_face} px of it, min_neighbors "
        f"{default.min_neighbors}, scale step {default.scale_factor}; the filter's default is "
        f"{default.detect_side} px. Photos: 6 of people (5 visible faces labelled), "
        f"{len(NO_PEOPLE)} without; LFW: 100 face and 100 background crops. Cost: median CPU-ms "
        "an image, the grey decode included.",
        "",
        "| grey copy | photo faces found (recall) | false boxes on people photos | "
        "no-people photos flagged (false-positive rate) | LFW face recall | LFW background "
        "false positives | CPU-ms |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Per photo at {default.detect_side} px:",
        "",
        tables[0],
    ]
    if clipart_root is not None:
        lines.append("")
        for group, (flagged, total) in clipart(default, clipart_root, per_group).items():
            lines.append(f"- OpenClipArt drawings, {group} (as the demo web serves them, "
                         f"{default.detect_side} px copy): {flagged} of {total} flagged "
                         f"({flagged / max(total, 1):.0%}).")
    lines += ["", READING]
    return "\n".join(lines) + "\n"


READING = (
    "Reading: the frontal cascade misses faces in profile (camera.png) and, at the filter's "
    "128 px copy, faces under about a fifth of the image's longer side (messi5.jpg, "
    "basketball1.png: crowd and sports shots); a 384 px copy finds the small frontal ones "
    "at ~10x the cost and with a first false positive. On face-sized crops (LFW) it is "
    "near-perfect. So the blur policy hides portrait-like faces, which are the identifiable "
    "ones in web thumbnails, not every face in a crowd. On the clip-art demo corpus it flags "
    "a few cartoon faces among the drawings of people (their faces are blurred under the "
    "default policy) and no drawing of anything else."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=project_home() / "cache" / "face-photos")
    parser.add_argument("--clipart", type=Path, default=None,
                        help="an OpenClipArt png/ root (e.g. $BRIVL_HOME/cache/openclipart/"
                             "tree/usr/share/openclipart/png)")
    parser.add_argument("--per-group", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    text = report(fetch_photos(args.cache), args.clipart, args.per_group)
    print(text)
    if not args.no_record:
        command = "python bench/faces.py" + (" --clipart PNG_ROOT" if args.clipart else "")
        replace_section("## Data: faces (issue 14)", command, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
