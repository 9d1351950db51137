"""The demo web: deterministic plan, every fault kind really served, held-out eval sets."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
from collections import deque
from urllib.parse import urljoin, urlsplit

import imagehash
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image
from protego import Protego
from selectolax.lexbor import LexborHTMLParser

from brivl.demo import (
    BLOCKLIST_WORDS,
    FAULT_KINDS,
    DemoConfig,
    DemoSite,
    build_site,
    serve,
)

N = 200
UA = "brivl-test/1.0"


@pytest.fixture(scope="module")
def site() -> DemoSite:
    return build_site(DemoConfig(n_images=N, seed=0, slow_seconds=1.0))


@pytest.fixture(scope="module")
def server(site: DemoSite):
    with serve(site) as running:
        yield running


def first(site: DemoSite, fault: str | None):
    return next(im for im in site.images if im.fault == fault)


def get(server, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 10)
    return requests.get(server.url(path), headers={"User-Agent": UA}, **kwargs)


# --- the plan ------------------------------------------------------------------------------------


def test_same_config_gives_a_byte_identical_site(site: DemoSite) -> None:
    again = build_site(DemoConfig(n_images=N, seed=0, slow_seconds=1.0))
    assert again.images == site.images and again.articles == site.articles
    assert again.paths() == site.paths()
    sample = [p for i, p in enumerate(site.paths()) if not p.startswith("/img/") or i % 4 == 0]
    sample += [
        im.path for im in site.images if im.fault
    ]  # every fault's bytes, a quarter of the rest
    for path in sample:
        assert again.response(path) == site.response(path), path
    other = build_site(DemoConfig(n_images=N, seed=1))
    assert [im.labels for im in other.images] != [im.labels for im in site.images]


def test_every_fault_kind_is_present_and_clean_images_dominate(site: DemoSite) -> None:
    counts = site.fault_counts()
    assert len(site.images) == N
    assert all(counts[kind] >= 1 for kind in FAULT_KINDS), counts
    assert 0.75 <= counts["clean"] / N <= 0.85
    assert len({im.path for im in site.images}) == N
    for im in site.images:  # labels use the full vocabulary and the caption names them
        assert set(im.labels) == {"object", "colour", "count", "position", "texture", "background"}
        assert im.labels["colour"] in im.caption


def test_too_small_a_site_is_refused_with_the_size_that_works() -> None:
    with pytest.raises(ValueError, match="n_images=20 is too small.*n_images >= "):
        build_site(DemoConfig(n_images=20))


def test_robots_txt_disallows_the_private_section_and_images(site: DemoSite) -> None:
    robots = Protego.parse(site.response("/robots.txt").body.decode())
    assert not robots.can_fetch("/private/a0001.html", UA)
    assert not robots.can_fetch("/img/private/000001.jpg", UA)
    for im in site.images:
        allowed = robots.can_fetch(im.path, UA) and robots.can_fetch(im.page_path, UA)
        assert allowed == (im.fault not in ("robots", "robots_page")), im
    assert all(
        im.page_path.startswith("/private/") for im in site.images if im.fault == "robots_page"
    )


def crawl_in_memory(site: DemoSite) -> tuple[dict[str, int], dict[str, dict]]:
    """BFS over the site's responses honouring robots.txt: page depths and parsed images."""
    robots = Protego.parse(site.response("/robots.txt").body.decode())
    depth, found, queue = {"/": 0}, {}, deque(["/"])
    while queue:
        path = queue.popleft()
        response = site.response(path)
        ctype = dict(response.headers)["Content-Type"]
        tree = LexborHTMLParser(response.body.decode(ctype.split("charset=")[1]))
        for a in tree.css("a[href]"):
            url = urljoin("http://demo/" + path.lstrip("/"), a.attributes["href"])
            parts = urlsplit(url)
            if (
                parts.netloc == "demo"
                and parts.path not in depth
                and robots.can_fetch(parts.path, UA)
            ):
                depth[parts.path] = depth[path] + 1
                queue.append(parts.path)
        for img in tree.css("img"):
            figure = img.parent
            caption = figure.css_first("figcaption")
            story = figure.parent.css_first("p")
            found[img.attributes["src"]] = {
                "page": path,
                "alt": img.attributes.get("alt"),
                "title": img.attributes.get("title") or "",
                "figcaption": caption.text() if caption else "",
                "surrounding": story.text() if story else "",
            }
    return depth, found


def test_pages_carry_every_allowed_image_with_its_texts(site: DemoSite) -> None:
    depth, found = crawl_in_memory(site)
    assert not any(p.startswith("/private/") for p in depth)
    assert max(depth[a.path] for a in site.articles if not a.private) == 2
    expected = {im.path: im for im in site.images if im.fault != "robots_page"}
    assert set(found) == set(expected)
    for path, texts in found.items():
        truth = expected[path]
        assert texts["page"] == truth.page_path
        for name in ("alt", "title", "figcaption", "surrounding"):
            assert texts[name] == getattr(truth, name), (path, name)


def test_texts_are_weak_and_text_faults_are_what_they_say(site: DemoSite) -> None:
    clean = [im for im in site.images if im.fault is None]
    assert sum(im.alt == im.caption for im in clean) < len(clean) / 4  # alt is rarely the caption
    assert any(im.labels["colour"] in im.surrounding for im in clean)
    for im in site.images:
        texts = (im.alt, im.title, im.figcaption, im.surrounding)
        if im.fault == "empty_text":
            assert texts == ("", "", "", "")
        elif im.fault == "overlong_text":
            assert min(map(len, texts)) >= 2000
        elif im.fault == "spam_text":
            assert all("cheap" in t.lower() for t in texts)
        elif im.fault == "blocklisted_text":
            assert all(any(w in t for w in BLOCKLIST_WORDS) for t in texts)
        elif im.fault == "non_utf8":
            assert all(not t.isascii() for t in texts)
        else:
            assert not any(w in " ".join(texts) for w in BLOCKLIST_WORDS)


# --- what the server really sends ----------------------------------------------------------------


def test_error_statuses_and_opt_outs(site: DemoSite, server) -> None:
    assert get(server, first(site, "http_404").path).status_code == 404
    assert get(server, first(site, "http_500").path).status_code == 500
    assert get(server, "/no/such/page.html").status_code == 404
    header = get(server, first(site, "optout_header").path)
    assert header.status_code == 200 and "noai" in header.headers["X-Robots-Tag"]
    assert "X-Robots-Tag" not in get(server, first(site, None).path).headers
    page = get(server, first(site, "optout_meta").page_path).text
    assert '<meta name="robots" content="noai, noimageai">' in page
    assert "noai" not in get(server, first(site, None).page_path).text


def test_broken_bodies(site: DemoSite, server) -> None:
    truncated = get(server, first(site, "truncated").path)
    assert truncated.headers["Content-Type"] == "image/jpeg"
    with pytest.raises(OSError):
        Image.open(io.BytesIO(truncated.content)).load()
    for im in (i for i in site.images if i.fault == "not_image"):
        body = get(server, im.path)
        assert body.status_code == 200 and im.path.endswith(".jpg")
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(io.BytesIO(body.content))
    bomb = get(server, first(site, "bomb").path)
    assert bomb.headers["Content-Type"] == "image/png" and len(bomb.content) < 100_000
    assert bomb.content[12:16] == b"IHDR"
    width, height = struct.unpack(">II", bomb.content[16:24])
    assert min(width, height) >= 20000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb.content))


def test_redirect_loop(site: DemoSite, server) -> None:
    path = first(site, "redirect_loop").path
    hop = get(server, path, allow_redirects=False)
    assert hop.status_code == 302
    back = get(server, hop.headers["Location"], allow_redirects=False)
    assert back.status_code == 302 and back.headers["Location"] == path
    with pytest.raises(requests.TooManyRedirects):
        get(server, path)


def test_non_utf8_page_declares_its_charset(site: DemoSite, server) -> None:
    im = first(site, "non_utf8")
    page = get(server, im.page_path)
    assert page.headers["Content-Type"] == "text/html; charset=windows-1252"
    with pytest.raises(UnicodeDecodeError):
        page.content.decode("utf-8")
    assert page.text == page.content.decode("cp1252")  # requests honours the header
    assert im.figcaption.replace("'", "&#x27;").replace('"', "&quot;") in page.text


def test_slow_body_trickles_without_blocking_others(site: DemoSite, server) -> None:
    im = first(site, "slow")
    result: dict = {}

    def fetch_slow() -> None:
        start = time.monotonic()
        result["body"] = get(server, im.path).content
        result["seconds"] = time.monotonic() - start

    slow = threading.Thread(target=fetch_slow)
    slow.start()
    time.sleep(0.1)
    start = time.monotonic()
    assert get(server, first(site, None).path).status_code == 200
    assert time.monotonic() - start < 0.5
    slow.join(5)
    assert result["seconds"] >= site.config.slow_seconds * 0.95
    # a client whose read timeout is shorter gives up (requests reports it as a ConnectionError
    # once the body has started)
    with pytest.raises(requests.ConnectionError, match="timed out"):
        get(server, im.path, timeout=(2, 0.3))
    assert Image.open(io.BytesIO(result["body"])).size == (im.width, im.height)


def test_filter_level_faults_download_fine(site: DemoSite, server) -> None:
    def picture(path: str) -> Image.Image:
        response = get(server, path)
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content))
        image.load()
        return image

    for im in site.images:
        if im.fault in (None, "tiny", "aspect", "robots"):
            assert picture(im.path).size == (im.width, im.height), im
    assert all(max(im.width, im.height) < 32 for im in site.images if im.fault == "tiny")
    for im in (i for i in site.images if i.fault == "aspect"):
        assert max(im.width, im.height) / min(im.width, im.height) >= 6
    dup = first(site, "duplicate")
    assert get(server, dup.path).content == get(server, dup.source_path).content
    assert dup.path != dup.source_path and site.image(dup.source_path).fault is None
    near = first(site, "near_duplicate")
    near_bytes, source_bytes = get(server, near.path).content, get(server, near.source_path).content
    assert near_bytes != source_bytes and near.labels == site.image(near.source_path).labels
    near_hash, source_hash = (imagehash.phash(picture(p)) for p in (near.path, near.source_path))
    others = [imagehash.phash(picture(im.path)) for im in site.images[:40] if im.fault is None]
    assert near_hash - source_hash <= 6 < min(near_hash - h for h in others if h != source_hash)


def test_access_log_records_requests(site: DemoSite, server) -> None:
    before = len(server.access_log)
    get(server, "/robots.txt")
    head = requests.head(server.url(site.index_paths[0]), headers={"User-Agent": UA}, timeout=5)
    assert head.status_code == 200 and head.content == b""
    records = server.access_log.snapshot()[before:]
    assert [(r.method, r.path, r.status, r.user_agent) for r in records] == [
        ("GET", "/robots.txt", 200, UA),
        ("HEAD", site.index_paths[0], 200, UA),
    ]
    assert server.seed_urls == [server.base_url + "/"] and server.host == "127.0.0.1"


# --- held-out eval sets --------------------------------------------------------------------------


def test_eval_sets_use_only_unseen_combinations(site: DemoSite, tmp_path) -> None:
    paths = site.eval_sets(tmp_path, n_zeroshot=20, n_retrieval=10, n_text=16, n_vqa=12)
    assert (tmp_path / "_manifest.json").is_file()
    classes = json.loads(paths["classes"].read_text())
    tables = {name: pq.read_table(p) for name, p in paths.items() if p.suffix == ".parquet"}
    assert {n: t.num_rows for n, t in tables.items()} == {
        "zeroshot_images": 20,
        "retrieval": 10,
        "zeroshot_text": 16,
        "vqa": 12,
    }
    seen = site.site_pairs()
    assert not seen & site.heldout_pairs
    for name in ("zeroshot_images", "retrieval", "vqa"):
        for row in tables[name].to_pylist():
            assert (row["object"], row["colour"]) not in seen, (name, row["object"], row["colour"])
            Image.open(io.BytesIO(row["image"])).load()
    zs = tables["zeroshot_images"].to_pylist()
    assert {r["label"] for r in zs} == set(classes["zeroshot_images"]["classes"])
    assert all(
        len(r["captions"]) >= 3 and r["colour"] in r["captions"][0]
        for r in tables["retrieval"].to_pylist()
    )
    site_text = " ".join(im.surrounding + im.figcaption for im in site.images)
    for row in tables["zeroshot_text"].to_pylist():
        assert row["label"] in classes["zeroshot_text"]["classes"] and row["text"] not in site_text
    for row in tables["vqa"].to_pylist():
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert 0 <= row["answer"] < 4 and row["question"].endswith("?")
    assert tables["vqa"].column("answer").type == "int64"


def test_face_photos_are_opt_in_and_each_shows_one_face() -> None:
    from brivl.filter.faces import FaceDetector

    plain = build_site(DemoConfig(n_images=60, seed=2))
    faced = build_site(DemoConfig(n_images=60, seed=2, face_photos=3))
    assert "face" not in plain.fault_counts() and faced.fault_counts()["face"] == 3
    faces = [im for im in faced.images if im.fault == "face"]
    (page,) = {im.page_path for im in faces}  # one public article, linked from an index page
    assert not page.startswith("/private/") and len(faced.images) == 63
    assert any(page.encode() in faced.response(p).body for p in faced.index_paths)
    detector, served = FaceDetector(), set()
    for im in faces:
        response = faced.response(im.path)
        assert response.status == 200 and im.path.encode() in faced.response(page).body
        assert Image.open(io.BytesIO(response.body)).size == (im.width, im.height)
        assert len(detector.boxes(response.body, im.width, im.height)) == 1, im.path
        served.add(response.body)
    assert len(served) == 3 and all(im.labels == {} for im in faces)  # distinct bytes, no labels
    assert faced.site_pairs() == {(im.labels["object"], im.labels["colour"])
                                  for im in faced.images if im.fault != "face"}
    with pytest.raises(ValueError, match="face_photos=9"):
        build_site(DemoConfig(n_images=60, face_photos=9))
