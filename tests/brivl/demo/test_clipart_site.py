"""The clip-art demo web: varied real-site markup, pagination, faults, held-out eval sets."""

from __future__ import annotations

import io
import re
import struct
from collections import deque
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
import requests
from PIL import Image
from protego import Protego
from selectolax.lexbor import LexborHTMLParser

from brivl.demo import DOWNLOAD_FAULTS, serve
from brivl.demo.clipart_pages import LICENCE_URL
from brivl.demo.clipart_site import (
    BOILERPLATE_ALTS,
    ClipArtConfig,
    build_clipart_site,
    loop_hop,
    picture_path,
)
from brivl.demo.holdout import HoldoutConfig
from brivl.demo.openclipart import PNG_ROOT, load_catalogue
from brivl.evaluate.datasets import read_eval_set
from brivl.evaluate.metrics import stratified_split

UA = "brivl-test/1.0"
CONFIG = ClipArtConfig(seed=0, slow_seconds=1.0, page_size=8,
                       holdout=HoldoutConfig(category_share=0.1, title_share=0.05))


@pytest.fixture(scope="module")
def tree(tmp_path_factory, clipart_tree):
    root = tmp_path_factory.mktemp("openclipart")
    clipart_tree.make_tree(root)
    return load_catalogue(root, fetch=False), root / PNG_ROOT


@pytest.fixture(scope="module")
def site(tree):
    return build_clipart_site(*tree, CONFIG)


def html_of(site, path: str) -> str:
    return site.response(path).body.decode()


def public_html(site) -> str:
    return "\n".join(html_of(site, p) for p in site.page_paths())


def crawl_in_memory(site) -> tuple[dict[str, int], dict[str, str]]:
    """BFS over the site honouring robots.txt: page depths, and image path -> page found on
    (every URL of <img src>, srcset and <source srcset>, query strings dropped)."""
    robots = Protego.parse(site.response("/robots.txt").body.decode())
    depth, found, queue = {"/": 0}, {}, deque(["/"])
    while queue:
        page = queue.popleft()
        base = "http://demo" + page
        tree = LexborHTMLParser(html_of(site, page))
        for a in tree.css("a[href], link[rel=next]"):
            parts = urlsplit(urljoin(base, a.attributes["href"]))
            if (parts.netloc == "demo" and parts.path not in depth
                    and robots.can_fetch(parts.path, UA)):
                depth[parts.path] = depth[page] + 1
                queue.append(parts.path)
        for node in tree.css("img, source"):
            urls = [node.attributes.get("src") or ""]
            urls += [c.split()[0] for c in (node.attributes.get("srcset") or "").split(",") if c]
            for url in filter(None, urls):
                found[urlsplit(urljoin(base, url)).path] = page
    return depth, found


def test_same_config_gives_the_same_site(site, tree) -> None:
    again = build_clipart_site(*tree, CONFIG)
    assert again.images == site.images and again.paths() == site.paths()
    assert all(again.response(p) == site.response(p) for p in site.page_paths(True))
    other = build_clipart_site(*tree, ClipArtConfig(seed=1, holdout=CONFIG.holdout))
    assert [im.path for im in other.images] != [im.path for im in site.images]


def test_pages_use_every_markup_variant(site) -> None:
    text = public_html(site)
    for needle in ("<figure", "<figcaption>", '<div class="card">', "<h3>",
                   '<span class="title">', '<table class="list">', '<td class="name">',
                   "srcset=", "<picture>", "<source ", 'src="../', 'src="/img/', 'alt=""',
                   f'rel="license" href="{LICENCE_URL}"', '<p class="desc">'):
        assert needle in text, needle
    assert any(f'alt="{b}"' in text for b in BOILERPLATE_ALTS)
    words = {k for im in site.images for k in im.labels["keywords"] if " " not in k}
    assert any(im.alt in words for im in site.images), "some alts are one keyword"
    layouts = {im.labels["layout"] for im in site.images}
    assert layouts == {"figure", "card", "row", "srcset", "picture"}


def test_category_pages_paginate_with_link_rel_next(site) -> None:
    stars = [lst for lst in site.listings if lst.category == "shapes/stars"]
    if not stars:  # held out: the birds have pages enough too
        stars = [lst for lst in site.listings if lst.category == "animals/birds"]
    n = sum(len(lst.image_paths) for lst in stars)
    assert len(stars) == -(-n // CONFIG.page_size) >= 2
    for lst in stars:
        page = html_of(site, lst.path)
        assert len(lst.image_paths) <= CONFIG.page_size
        assert f"<h1>{lst.heading}</h1>" in page and lst.heading in ("Stars clip art",
                                                                      "Birds clip art")
        nexts = re.findall(r'<link rel="next" href="([^"]+)">', page)
        anchors = re.findall(r'<a rel="next" href="([^"]+)">next', page)
        if lst.number < len(stars):
            target = urlsplit(urljoin("http://demo" + lst.path, nexts[0])).path
            assert nexts == anchors and target == stars[lst.number].path
        else:
            assert not nexts and not anchors


def test_every_public_image_is_reachable_within_depth_two(site) -> None:
    depth, found = crawl_in_memory(site)
    assert max(depth.values()) == 2 and not any(p.startswith("/private/") for p in depth)
    assert not any(p.endswith((".jpg", ".png")) for p in depth), "no page links a picture"
    public = {im.path: im for im in site.images if im.fault != "robots_page"}
    assert set(found) == set(public)
    assert all(found[p] == im.page_path for p, im in public.items())


def test_heldout_pictures_are_nowhere_on_the_site(site) -> None:
    heldout = site.holdout.heldout
    assert site.holdout.by_category and site.holdout.by_title
    text = "\n".join(html_of(site, p) for p in site.page_paths(include_private=True))
    files = {im.labels["file"] for im in site.images}
    for item in heldout:
        assert item.file not in files and f"/{item.file[:-4]}." not in text
        for image_format in ("jpeg", "png"):
            assert site.response(picture_path(item.file, image_format)).status == 404
    assert not {im.labels["category"] for im in site.images} & set(site.holdout.categories)


def test_robots_txt_and_members_pages(site) -> None:
    robots = Protego.parse(site.response("/robots.txt").body.decode())
    assert not robots.can_fetch("/private/uploads-1.html", UA)
    assert not robots.can_fetch("/", "GPTBot")
    for im in site.images:
        allowed = robots.can_fetch(im.path, UA) and robots.can_fetch(im.page_path, UA)
        assert allowed == (im.fault not in ("robots", "robots_page")), im
    private = [im for im in site.images if im.fault == "robots_page"]
    assert private and all(im.page_path.startswith("/private/uploads-") for im in private)


def test_every_fault_kind_is_served_as_it_says(site) -> None:
    counts = site.fault_counts()
    assert all(counts[kind] >= 1 for kind in DOWNLOAD_FAULTS), counts
    assert counts["clean"] / len(site.images) > 0.7

    def first(kind):
        return site.response(next(im.path for im in site.images if im.fault == kind))

    clean = next(im for im in site.images if im.fault is None)
    ok = site.response(clean.path)
    assert ok.status == 200 and dict(ok.headers)["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(ok.body)) as img:
        assert img.size == (clean.width, clean.height) and img.format == "JPEG"
        assert np.asarray(img.convert("RGB"))[0, 0].min() >= 235  # transparency on white
    assert first("http_404").status == 404 and first("http_500").status == 500
    cut = next(im.path for im in site.images if im.fault == "truncated")
    full = site.image_bytes(cut)
    assert site.response(cut).body == full[: len(full) // 2] and full.startswith(b"\xff\xd8")
    assert first("slow").trickle_seconds == CONFIG.slow_seconds
    assert ("X-Robots-Tag", "noai, noimageai") in first("optout_header").headers
    assert not first("not_image").body.startswith(b"\x89PNG")
    bomb = first("bomb").body
    assert struct.unpack(">II", bomb[16:24]) == (20000, 20000)
    loop = next(im.path for im in site.images if im.fault == "redirect_loop")
    hop = dict(site.response(loop).headers)["Location"]
    assert hop == loop_hop(loop) and dict(site.response(hop).headers)["Location"] == loop
    optout = next(im for im in site.images if im.fault == "optout_meta")
    assert '<meta name="robots" content="noai, noimageai">' in html_of(site, optout.page_path)
    assert all(im.fault == "optout_meta" for im in site.images if im.page_path == optout.page_path)


def test_png_sites_serve_the_package_bytes(tree) -> None:
    site = build_clipart_site(*tree, ClipArtConfig(image_format="png", holdout=CONFIG.holdout))
    clean = next(im for im in site.images if im.fault is None)
    assert clean.path == picture_path(clean.labels["file"], "png")
    got = site.response(clean.path)
    assert dict(got.headers)["Content-Type"] == "image/png"
    assert got.body == (tree[1] / clean.labels["file"]).read_bytes()
    with pytest.raises(ValueError, match="image_format='gif'; accepted"):
        build_clipart_site(*tree, ClipArtConfig(image_format="gif"))


def test_too_small_a_site_is_refused_with_the_size_that_works(tree) -> None:
    with pytest.raises(ValueError, match=r"n_images=15 is too small.*n_images >= \d+"):
        build_clipart_site(*tree, ClipArtConfig(n_images=15, holdout=CONFIG.holdout))
    with pytest.raises(ValueError, match=r"n_images=9999: this catalogue has 1\.\.\d+"):
        build_clipart_site(*tree, ClipArtConfig(n_images=9999, holdout=CONFIG.holdout))


def test_eval_sets_load_and_hold_only_heldout_pictures(site, tmp_path) -> None:
    paths = site.eval_sets(tmp_path, n_zeroshot=20, n_retrieval=12)
    zs = read_eval_set(paths["zeroshot_images"])
    names = sorted({i.category_name for i in site.holdout.by_category})
    assert zs.classes == names and zs.templates and "{}" in zs.templates[0]
    assert not zs.skipped and len(zs) >= 2 * len(names)
    assert all(np.bincount(zs.labels) >= 2)  # the probe's split has both halves per class
    train, test = stratified_split(zs.labels)
    assert len(set(zs.labels[train])) == len(set(zs.labels[test])) == len(names)
    rt = read_eval_set(paths["retrieval"])
    heldout = {i.title: i for i in site.holdout.heldout}
    assert len(rt) == 12 and all(caps[0] in heldout for caps in rt.captions)
    assert any(heldout[c[0]] in site.holdout.by_title for c in rt.captions)
    pixels = np.asarray(zs.images[0])  # the transparent (black) border is white now
    assert pixels.ndim == 3 and pixels[0, 0].min() >= 235


def test_served_site_over_http(site) -> None:
    with serve(site) as server:
        home = requests.get(server.url("/"), timeout=10)
        assert home.status_code == 200 and site.listings[0].path in home.text
        pic = next(im for im in site.images if im.fault is None)
        got = requests.get(server.url(pic.path + "?w=120"), timeout=10)
        assert got.content == site.image_bytes(pic.path)


def test_a_real_openclipart_site(openclipart_catalogue, tmp_path) -> None:
    catalogue, root = openclipart_catalogue
    site = build_clipart_site(catalogue, root, ClipArtConfig(n_images=300))
    counts = site.fault_counts()
    assert len(site.images) == 300 and all(counts[k] >= 1 for k in DOWNLOAD_FAULTS), counts
    heldout = {i.file for i in site.holdout.heldout}
    assert 0.09 * len(catalogue) < len(site.holdout.by_category) < 0.13 * len(catalogue)
    assert not heldout & {im.labels["file"] for im in site.images}
    _, found = crawl_in_memory(site)
    assert set(found) == {im.path for im in site.images if im.fault != "robots_page"}
    clean = [im for im in site.images if im.fault is None][:20]
    for im in clean:
        with Image.open(io.BytesIO(site.response(im.path).body)) as img:
            assert img.size == (im.width, im.height)
    paths = site.eval_sets(tmp_path, n_zeroshot=60, n_retrieval=30)
    zs, rt = read_eval_set(paths["zeroshot_images"]), read_eval_set(paths["retrieval"])
    assert len(zs.classes) >= 10 and len(rt) == 30 and not zs.skipped and not rt.skipped
