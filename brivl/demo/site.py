"""The demo web: a deterministic news site whose pictures carry known labels and known faults.

:func:`build_site` plans everything up front from :class:`DemoConfig` — which image sits on
which page, its labels, its texts and its fault — and renders pictures lazily on request
(:meth:`DemoSite.response`, cached). Same config ⇒ byte-identical pages and images.

Layout (depth 2 from the seed ``/``)::

    /robots.txt                 disallows /private/ and /img/private/
    /                           links to every index page, to /private/ and to one external host
    /pages/K.html               ~10 article links each (plus prev/next)
    /articles/aNNNN.html        4-8 <section class="story"> each: <p> + <figure><img><figcaption>
    /private/, /private/aNNNN.html   the robots-disallowed section (fault "robots_page")
    /img/NNNNNN.jpg             pictures; /img/private/NNNNNN.jpg (fault "robots"),
                                /img/NNNNNN.png (fault "bomb"), /img/NNNNNN-loop.jpg (redirect)

What each fault kind serves (``ImageTruth.fault``; ``None`` = clean, ~80% of images):

    robots          /img/private/NNNNNN.jpg on a public page; a valid JPEG (only robots.txt stops it)
    robots_page     every image of a /private/ article; /img/NNNNNN.jpg, never linked elsewhere
    optout_meta     every image of an article with <meta name="robots" content="noai, noimageai">
    optout_header   200 JPEG with ``X-Robots-Tag: noai, noimageai``
    http_404/500    that status, small HTML body
    slow            200 JPEG: headers and half the body at once, then a stall of slow_seconds
    not_image       200 HTML body at a .jpg path (Content-Type image/jpeg for even indexes,
                    text/html for odd ones)
    truncated       200 image/jpeg, the first half of a JPEG
    bomb            200 image/png, ~50 kB, 1-bit PNG whose IHDR says 20000x20000
    redirect_loop   302 -> NNNNNN-loop.jpg -> 302 -> back to NNNNNN.jpg
    tiny, aspect    valid JPEG, < 32 px per side / aspect ratio >= 6
    duplicate       the same bytes as ``source_path`` (a clean image); near_duplicate: the same
                    picture resized to 90% and/or brightened, re-encoded
    empty_text      alt="" and no title, figcaption or paragraph
    overlong_text   alt, title, figcaption and paragraph each >= OVERLONG_CHARS characters
    spam_text       "BUY NOW cheap ..." keyword spam in every text
    blocklisted_text  a word of BLOCKLIST_WORDS in every text
    non_utf8        every image of an article served as windows-1252 (declared in the
                    Content-Type header and <meta charset>), texts with accents and “quotes”

Opt-in (``DemoConfig.face_photos``, default 0: the plan above is unchanged):

    face            a real photo of a person (:mod:`brivl.demo.photos`), one frontal face;
                    all on one public article, with portrait captions, no labels
"""

from __future__ import annotations

import dataclasses
import functools
import html
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from brivl.demo import photos, render, vocab
from brivl.demo.evalsets import write_eval_sets
from brivl.demo.site_config import DemoConfig

DOWNLOAD_FAULTS = (
    "robots",
    "robots_page",
    "optout_meta",
    "optout_header",
    "http_404",
    "http_500",
    "slow",
    "not_image",
    "truncated",
    "bomb",
    "redirect_loop",
)
FILTER_FAULTS = (
    "tiny",
    "aspect",
    "duplicate",
    "near_duplicate",
    "empty_text",
    "overlong_text",
    "spam_text",
    "blocklisted_text",
    "non_utf8",
)
FAULT_KINDS = DOWNLOAD_FAULTS + FILTER_FAULTS
PAGE_FAULTS = ("robots_page", "optout_meta", "non_utf8")  # every image of such an article
OPT_IN_FAULTS = ("face",)  # only with DemoConfig.face_photos
FACE_TEXTS = {  # what the face article says about its photo (English, no spam, no labels)
    "alt": "Portrait of Rear Admiral Grace Hopper in uniform",
    "title": "",
    "figcaption": "Grace Hopper, computer scientist and naval officer, photographed in 1984.",
    "surrounding": "The archive portrait shows the admiral in her dress uniform. She led "
                   "the team that wrote one of the first compilers.",
}
FACE_CAPTION = "a portrait photograph of a woman in naval uniform"
BLOCKLIST_WORDS = ("blockword", "bannedterm", "forbiddenphrase")
OVERLONG_CHARS = 2000
BOMB_SIDE = 20000
SITE_NAME = "Demo Gazette"
SITE_LICENCE = "https://creativecommons.org/licenses/by/4.0/"  # declared on every page
SITE_COPYRIGHT = "(c) Demo Gazette authors"
EXTERNAL_LINK = "http://partner.invalid/news"  # off-site link: a crawler must not follow it
ARTICLES_PER_INDEX = 10
NOT_IMAGE_BODY = (
    b"<!DOCTYPE html><html><head><title>Image unavailable</title></head>"
    b"<body><h1>Image unavailable</h1><p>This is an HTML page, not a picture.</p></body></html>"
)


@dataclass(frozen=True)
class ImageTruth:
    """One ``<img>`` of the site and what is known about it.

    Empty ``alt`` means ``alt=""``; empty ``title``/``figcaption``/``surrounding`` mean the
    attribute/element is absent. ``width``/``height`` are the served picture's size (``None``
    when no picture is served). ``source_path`` names the original of a (near) duplicate.
    """

    path: str
    page_path: str
    fault: str | None
    labels: dict
    caption: str
    alt: str
    title: str
    figcaption: str
    surrounding: str
    index: int = 0
    width: int | None = None
    height: int | None = None
    source_path: str | None = None


@dataclass(frozen=True)
class Article:
    """One article page: its section, charset, opt-out meta, and its images' paths."""

    path: str
    headline: str
    topic: str
    private: bool
    charset: str
    optout: bool
    intro: str
    image_paths: tuple[str, ...]
    index_path: str


@dataclass(frozen=True)
class Response:
    """What the server sends for a path; ``trickle_seconds`` > 0: the body stalls that long
    half-way (headers and the first half go out at once)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    trickle_seconds: float = 0.0


@dataclass(frozen=True)
class _Spec:  # how to draw one picture
    labels: dict
    width: int
    height: int
    quality: int
    seed: tuple[int, int]
    near_variant: int | None = None
    duplicate_of: str | None = None  # serve exactly the bytes of this path
    photo: int | None = None  # serve this variant of the face photo (brivl.demo.photos)


@dataclass
class DemoSite:
    """The planned site: truth about every image, the pages, and responses for any path."""

    config: DemoConfig
    images: list[ImageTruth]
    articles: list[Article]
    index_paths: list[str]
    heldout_pairs: frozenset[tuple[str, str]]
    robots_txt: str
    _pages: dict[str, tuple[bytes, str]] = field(repr=False, default_factory=dict)
    _specs: dict[str, _Spec] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._by_path = {im.path: im for im in self.images}
        self._jpeg = functools.lru_cache(maxsize=8192)(self._encode)

    # --- truth ---------------------------------------------------------------------------
    def image(self, path: str) -> ImageTruth:
        return self._by_path[path]

    def fault_counts(self) -> dict[str, int]:
        """Images per fault kind (``"clean"`` for no fault), every kind listed."""
        counts = Counter(im.fault or "clean" for im in self.images)
        extra = OPT_IN_FAULTS if self.config.face_photos else ()
        return {kind: counts.get(kind, 0) for kind in ("clean", *FAULT_KINDS, *extra)}

    def site_pairs(self) -> frozenset[tuple[str, str]]:
        """(object, colour) pairs pictured on the site (the eval sets use none of them)."""
        return frozenset((im.labels["object"], im.labels["colour"]) for im in self.images
                         if im.labels)

    def page_paths(self, include_private: bool = False) -> list[str]:
        """Every HTML page path (home, index pages, articles; private ones on request)."""
        paths = ["/", *self.index_paths]
        if include_private:
            paths.append("/private/")
        return paths + [a.path for a in self.articles if include_private or not a.private]

    def paths(self) -> list[str]:
        """Every path the server answers with content (pages, robots.txt, images, loop hops)."""
        loops = [_loop_path(im.path) for im in self.images if im.fault == "redirect_loop"]
        return sorted(self._pages) + [im.path for im in self.images] + loops

    def eval_sets(self, out_dir: str | Path, **sizes: int) -> dict[str, Path]:
        """Write the held-out eval sets (see :mod:`brivl.demo.evalsets`); name → path."""
        return write_eval_sets(self.config, self.heldout_pairs, out_dir, **sizes)

    # --- serving -------------------------------------------------------------------------
    def response(self, path: str) -> Response:
        """The response for a URL path (query string ignored); unknown paths are 404."""
        path = path.split("?", 1)[0].split("#", 1)[0] or "/"
        if path in self._pages:
            body, ctype = self._pages[path]
            return _ok(body, ctype)
        if path.endswith("-loop.jpg"):
            origin = path[: -len("-loop.jpg")] + ".jpg"
            if origin in self._by_path and self._by_path[origin].fault == "redirect_loop":
                return _redirect(origin)
        truth = self._by_path.get(path)
        if truth is None:
            return _error(404, "Not Found")
        return self._image_response(truth)

    def image_bytes(self, path: str) -> bytes:
        """The encoded picture behind an image path, ignoring its fault (cached)."""
        return self._jpeg(path)

    def warm(self) -> int:
        """Render every served picture into the cache now (e.g. before timing a download);
        returns how many."""
        paths = [im.path for im in self.images if im.width and im.fault != "bomb"]
        for path in paths:
            self.image_bytes(path)
        return len(paths)

    def _image_response(self, truth: ImageTruth) -> Response:
        return fault_response(
            truth.fault,
            lambda: self.image_bytes(truth.path),
            loop_path=_loop_path(truth.path),
            odd=truth.index % 2 == 1,
            slow_seconds=self.config.slow_seconds,
        )

    def _encode(self, path: str) -> bytes:
        spec = self._specs[path]
        if spec.duplicate_of is not None:
            return self._jpeg(spec.duplicate_of)
        if spec.photo is not None:
            return photos.face_photo(spec.photo, max(spec.width, spec.height), spec.quality)
        image = render.render(spec.labels, spec.width, spec.height, list(spec.seed))
        if spec.near_variant is not None:
            image = render.near_duplicate(image, spec.near_variant)
        return render.jpeg(image, spec.quality)


def fault_response(
    fault: str | None,
    body: Callable[[], bytes],
    *,
    ctype: str = "image/jpeg",
    loop_path: str = "",
    odd: bool = False,
    slow_seconds: float = 3.0,
) -> Response:
    """What an image path with ``fault`` serves (see the module docstring); ``body()`` gives
    the picture's bytes (``ctype``), ``loop_path`` is the redirect loop's other hop, ``odd``
    picks not_image's Content-Type (text/html; else ``ctype``)."""
    if fault == "http_404":
        return _error(404, "Not Found")
    if fault == "http_500":
        return _error(500, "Internal Server Error")
    if fault == "redirect_loop":
        return _redirect(loop_path)
    if fault == "bomb":
        return _ok(render.bomb_png(BOMB_SIDE), "image/png")
    if fault == "not_image":
        return _ok(NOT_IMAGE_BODY, "text/html; charset=utf-8" if odd else ctype)
    data = body()
    if fault == "truncated":
        return _ok(data[: len(data) // 2], ctype)
    if fault == "slow":
        return _ok(data, ctype, trickle=slow_seconds)
    if fault == "optout_header":
        return _ok(data, ctype, extra=(("X-Robots-Tag", "noai, noimageai"),))
    return _ok(data, ctype)


def _ok(body: bytes, ctype: str, trickle: float = 0.0, extra: tuple = ()) -> Response:
    headers = (("Content-Type", ctype), ("Content-Length", str(len(body))), *extra)
    return Response(200, headers, body, trickle)


def _error(status: int, reason: str) -> Response:
    body = f"<!DOCTYPE html><html><body><h1>{status} {reason}</h1></body></html>".encode()
    return Response(
        status,
        (("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))),
        body,
    )


def _redirect(location: str) -> Response:
    return Response(302, (("Location", location), ("Content-Length", "0")), b"")


def _loop_path(path: str) -> str:
    return path[: -len(".jpg")] + "-loop.jpg"


# --- planning ----------------------------------------------------------------------------------


def build_site(config: DemoConfig | None = None) -> DemoSite:
    """Plan the whole site from ``config`` (pictures are drawn later, on request)."""
    return _Planner(config or DemoConfig()).build()


class _Planner:
    def __init__(self, config: DemoConfig) -> None:
        if config.min_side < 32 or config.max_side < config.min_side:
            raise ValueError(
                f"min_side={config.min_side}, max_side={config.max_side}: need 32 <= min_side <= max_side"
            )
        if not 0 < config.fault_fraction < 1:
            raise ValueError(f"fault_fraction={config.fault_fraction}: must be in (0, 1)")
        if not 0 <= config.face_photos <= photos.MAX_VARIANTS:
            raise ValueError(f"face_photos={config.face_photos}: accepted 0..{photos.MAX_VARIANTS}")
        self.config = config
        self.faces = 0  # face photos planned so far
        self.rng = random.Random(f"brivl-demo:{config.seed}")
        colours = list(vocab.COLOURS)
        k = config.heldout_colours_per_object
        if not 0 < k < len(colours):
            raise ValueError(f"heldout_colours_per_object={k}: must be in 1..{len(colours) - 1}")
        self.heldout = frozenset(
            (obj, col) for obj in vocab.OBJECTS for col in self.rng.sample(colours, k)
        )
        self.pairs = [(o, c) for o in vocab.OBJECTS for c in colours if (o, c) not in self.heldout]

    def build(self) -> DemoSite:
        groups = self._plan_articles()
        images, specs, articles = self._populate(groups)
        index_paths, pages = self._pages(articles, images)
        robots = self._robots_txt()
        pages["/robots.txt"] = (robots.encode(), "text/plain; charset=utf-8")
        return DemoSite(
            self.config, images, articles, index_paths, self.heldout, robots, pages, specs
        )

    def _plan_articles(self) -> list[tuple[str | None, list[str | None]]]:
        """[(page fault or None, [image fault or None per image])] in site order."""
        n, rng = self.config.n_images, self.rng
        share = max(1, round(n * self.config.fault_fraction / len(FAULT_KINDS)))
        page_groups: list[tuple[str | None, list[str | None]]] = []
        for kind in PAGE_FAULTS:
            assigned = 0
            while assigned < share:
                size = min(rng.randint(4, 8), max(2, share - assigned))
                page_groups.append((kind, [kind] * size))
                assigned += size
        singles = [k for k in FAULT_KINDS if k not in PAGE_FAULTS for _ in range(share)]
        n_clean = n - len(singles) - sum(len(g) for _, g in page_groups)
        if n_clean < max(10, 2 * share):
            raise ValueError(
                f"n_images={n} is too small to hold every fault kind with fault_fraction="
                f"{self.config.fault_fraction}; use n_images >= {n - n_clean + max(10, 2 * share)}"
            )
        kinds: list[str | None] = [None] * n_clean + singles
        rng.shuffle(kinds)
        groups: list[tuple[str | None, list[str | None]]] = []
        while kinds:
            size = rng.randint(4, 8)
            groups.append((None, kinds[:size]))
            kinds = kinds[size:]
        for group in page_groups:
            if group[0] == "robots_page":
                groups.append(group)  # the private section comes last
            else:
                groups.insert(rng.randint(1, max(1, len(groups) - 1)), group)
        if self.config.face_photos:  # the last public article (no draw: the rest stays put)
            first_private = next(i for i, (kind, _) in enumerate(groups) if kind == "robots_page")
            groups.insert(first_private, (None, ["face"] * self.config.face_photos))
        return groups

    def _populate(self, groups):
        rng = self.rng
        images: list[ImageTruth] = []
        specs: dict[str, _Spec] = {}
        articles: list[Article] = []
        public_no = private_no = 0
        for page_kind, kinds in groups:
            private = page_kind == "robots_page"
            if private:
                private_no += 1
                page_path = f"/private/a{private_no:04d}.html"
                index_path = "/private/"
            else:
                public_no += 1
                page_path = f"/articles/a{public_no:04d}.html"
                index_path = f"/pages/{(public_no - 1) // ARTICLES_PER_INDEX + 1}.html"
            topic = rng.choice(list(vocab.TOPICS))
            headline = vocab.headline(topic, rng)
            if page_kind == "non_utf8":
                headline = f"{rng.choice(vocab.ACCENTED)}: {headline}"
            paths = []
            for kind in kinds:
                truth, spec = self._image(len(images), kind, page_path, topic)
                images.append(truth)
                specs[truth.path] = spec
                paths.append(truth.path)
            articles.append(
                Article(
                    page_path,
                    headline,
                    topic,
                    private,
                    "windows-1252" if page_kind == "non_utf8" else "utf-8",
                    page_kind == "optout_meta",
                    vocab.filler(topic, rng, 2),
                    tuple(paths),
                    index_path,
                )
            )
        self._link_duplicates(images, specs)
        return images, specs, articles

    def _image(self, index: int, kind: str | None, page_path: str, topic: str):
        if kind == "face":
            return self._face_image(index, page_path)
        rng, cfg = self.rng, self.config
        obj, colour = rng.choice(self.pairs)
        labels = {
            "object": obj,
            "colour": colour,
            "count": rng.choice(vocab.COUNTS),
            "position": rng.choice(vocab.POSITIONS),
            "texture": rng.choice(vocab.TEXTURES),
            "background": rng.choice(vocab.BACKGROUNDS),
        }
        width, height = (
            rng.randint(cfg.min_side, cfg.max_side),
            rng.randint(cfg.min_side, cfg.max_side),
        )
        if kind == "tiny":
            width, height = rng.randint(12, 28), rng.randint(12, 28)
        elif kind == "aspect":
            long = rng.randint(320, 480)
            short = rng.randint(24, long // 7)
            width, height = (long, short) if rng.random() < 0.5 else (short, long)
        quality = rng.randint(80, 92)
        texts = self._texts(kind, labels, topic, index)
        ext = ".png" if kind == "bomb" else ".jpg"
        path = f"/img/private/{index:06d}.jpg" if kind == "robots" else f"/img/{index:06d}{ext}"
        served = kind not in ("http_404", "http_500", "not_image", "redirect_loop")
        size = (BOMB_SIDE, BOMB_SIDE) if kind == "bomb" else (width, height)
        truth = ImageTruth(
            path=path,
            page_path=page_path,
            fault=kind,
            labels=labels,
            caption=vocab.describe(labels),
            index=index,
            width=size[0] if served else None,
            height=size[1] if served else None,
            **texts,
        )
        spec = _Spec(labels, width, height, quality, (cfg.seed & 0xFFFFFFFF, index))
        return truth, spec

    def _face_image(self, index: int, page_path: str) -> tuple[ImageTruth, _Spec]:
        """A real photo of a person (the next variant of the face photo); it has no labels."""
        variant, self.faces = self.faces, self.faces + 1
        width, height = photos.face_photo_size(variant, self.config.max_side)
        truth = ImageTruth(path=f"/img/{index:06d}.jpg", page_path=page_path, fault="face",
                           labels={}, caption=FACE_CAPTION, index=index, width=width,
                           height=height, **FACE_TEXTS)
        return truth, _Spec({}, width, height, 90, (self.config.seed & 0xFFFFFFFF, index),
                            photo=variant)

    def _link_duplicates(self, images: list[ImageTruth], specs: dict[str, _Spec]) -> None:
        """Point each (near) duplicate at a clean original and copy its labels and size."""
        clean = [im for im in images if im.fault is None]
        for i, im in enumerate(images):
            if im.fault not in ("duplicate", "near_duplicate"):
                continue
            source = self.rng.choice(clean)
            src_spec = specs[source.path]
            if im.fault == "duplicate":
                spec = dataclasses.replace(src_spec, duplicate_of=source.path)
                size = (source.width, source.height)
            else:
                variant = self.rng.randrange(3)
                spec = dataclasses.replace(
                    src_spec, quality=max(60, src_spec.quality - 12), near_variant=variant
                )
                shrink = variant in (0, 2)
                size = (
                    (max(8, round(src_spec.width * 0.9)), max(8, round(src_spec.height * 0.9)))
                    if shrink
                    else (src_spec.width, src_spec.height)
                )
            specs[im.path] = spec
            images[i] = dataclasses.replace(
                im,
                labels=dict(source.labels),
                caption=source.caption,
                source_path=source.path,
                width=size[0],
                height=size[1],
            )

    # --- texts -----------------------------------------------------------------------------
    def _texts(self, kind: str | None, labels: dict, topic: str, index: int) -> dict[str, str]:
        rng = self.rng
        if kind == "empty_text":
            return {"alt": "", "title": "", "figcaption": "", "surrounding": ""}
        texts = self._weak_texts(labels, topic)
        if kind == "overlong_text":
            return {
                k: self._lengthen(v or vocab.partial(labels, rng), topic) for k, v in texts.items()
            }
        if kind == "spam_text":
            spam = vocab.SPAM.format(w=labels["object"])
            stuffed = " ".join([labels["colour"], labels["object"]] * 6)
            return {
                "alt": spam,
                "title": "cheap cheap cheap buy now",
                "figcaption": f"{spam} {spam}",
                "surrounding": f"{spam} {stuffed} {spam} {stuffed} {spam}",
            }
        if kind == "blocklisted_text":
            word = rng.choice(BLOCKLIST_WORDS)
            return {
                k: self._insert(v or vocab.partial(labels, rng), word) for k, v in texts.items()
            }
        if kind == "non_utf8":
            return {
                k: f"{rng.choice(vocab.ACCENTED)} {v or vocab.partial(labels, rng)} "
                f"{rng.choice(vocab.ACCENTED)}"
                for k, v in texts.items()
            }
        return texts

    def _weak_texts(self, labels: dict, topic: str) -> dict[str, str]:
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            alt = vocab.describe(labels, rng, rng.randrange(5))
        elif r < 0.55:
            alt = vocab.partial(labels, rng)
        elif r < 0.8:
            alt = rng.choice(vocab.FILENAMES).format(n=rng.randint(1, 9999), d=rng.randint(2, 9))
        else:
            alt = rng.choice(vocab.GENERIC_ALTS)
        r = rng.random()
        title = (
            ""
            if r < 0.45
            else vocab.partial(labels, rng)
            if r < 0.75
            else vocab.headline(topic, rng)
        )
        r = rng.random()
        if r < 0.2:
            figcaption = ""
        elif r < 0.7:
            p = vocab.partial(labels, rng)
            figcaption = f"{p[0].upper()}{p[1:]}. {vocab.filler_sentence(topic, rng)}"
        else:
            figcaption = vocab.filler_sentence(topic, rng)
        sentences = [vocab.filler_sentence(topic, rng) for _ in range(rng.randint(2, 4))]
        r = rng.random()
        if r < 0.15:
            mention = rng.choice(vocab.STRONG_MENTIONS).format(
                d=vocab.describe(labels, rng, rng.randrange(5))
            )
            sentences.insert(rng.randint(0, len(sentences)), mention)
        elif r < 0.65:
            mention = rng.choice(vocab.MENTIONS).format(p=vocab.partial(labels, rng))
            sentences.insert(rng.randint(0, len(sentences)), mention)
        return {
            "alt": alt,
            "title": title,
            "figcaption": figcaption,
            "surrounding": " ".join(sentences),
        }

    def _lengthen(self, text: str, topic: str) -> str:
        parts = [text]
        while sum(len(p) + 1 for p in parts) < OVERLONG_CHARS:
            parts.append(vocab.filler_sentence(topic, self.rng))
        return " ".join(parts)

    def _insert(self, text: str, word: str) -> str:
        words = text.split(" ")
        words.insert(self.rng.randint(0, len(words)), word)
        return " ".join(words)

    # --- pages -----------------------------------------------------------------------------
    def _robots_txt(self) -> str:
        lines = [
            f"# robots.txt of the {SITE_NAME} (brivl demo web)",
            "User-agent: GPTBot",
            "Disallow: /",
            "",
            "User-agent: *",
            "Disallow: /private/",
            "Disallow: /img/private/",
        ]
        if self.config.crawl_delay is not None:
            lines.append(f"Crawl-delay: {self.config.crawl_delay:g}")
        return "\n".join(lines) + "\n"

    def _pages(self, articles: list[Article], images: list[ImageTruth]):
        by_path = {im.path: im for im in images}
        public = [a for a in articles if not a.private]
        private = [a for a in articles if a.private]
        n_index = max(1, -(-len(public) // ARTICLES_PER_INDEX))
        index_paths = [f"/pages/{k}.html" for k in range(1, n_index + 1)]
        pages: dict[str, tuple[bytes, str]] = {}
        home = _home_html(index_paths)
        pages["/"] = pages["/index.html"] = (home.encode(), "text/html; charset=utf-8")
        for k, path in enumerate(index_paths):
            chunk = public[k * ARTICLES_PER_INDEX : (k + 1) * ARTICLES_PER_INDEX]
            prev_path = index_paths[k - 1] if k > 0 else None
            next_path = index_paths[k + 1] if k + 1 < n_index else None
            body = _index_html(f"Page {k + 1}", chunk, prev_path, next_path)
            pages[path] = (body.encode(), "text/html; charset=utf-8")
        private_index = _index_html("Members only", private, None, None)
        pages["/private/"] = pages["/private/index.html"] = (
            private_index.encode(),
            "text/html; charset=utf-8",
        )
        for article in articles:
            body = _article_html(article, [by_path[p] for p in article.image_paths], self.rng)
            pages[article.path] = (
                body.encode("cp1252" if article.charset == "windows-1252" else "utf-8"),
                f"text/html; charset={article.charset}",
            )
        return index_paths, pages


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _head(title: str, charset: str = "utf-8", optout: bool = False) -> str:
    meta = '<meta name="robots" content="noai, noimageai">\n' if optout else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="{charset}">\n{meta}'
        f"<title>{_e(title)} | {SITE_NAME}</title>\n"
        f'<link rel="license" href="{SITE_LICENCE}">\n'
        f'<meta name="copyright" content="{SITE_COPYRIGHT}">\n</head>\n<body>\n'
        f'<header><a href="/">{SITE_NAME}</a></header>\n'
    )


def _home_html(index_paths: list[str]) -> str:
    items = "\n".join(
        f'<li><a href="{p}">Page {k}</a></li>' for k, p in enumerate(index_paths, start=1)
    )
    return (
        _head("Home")
        + f"<main>\n<h1>{SITE_NAME}</h1>\n<p>Shapes, colours and the news of the day.</p>\n"
        f'<ul class="pages">\n{items}\n</ul>\n'
        '<p><a href="/private/">Members only</a></p>\n'
        f'<p><a href="{EXTERNAL_LINK}">Our partner site</a></p>\n</main>\n</body>\n</html>\n'
    )


def _index_html(
    title: str, articles: list[Article], prev_path: str | None, next_path: str | None
) -> str:
    items = "\n".join(
        f'<li><a href="{a.path}">{_e(a.headline)}</a> <span class="topic">{a.topic}</span></li>'
        for a in articles
    )
    nav = []
    if prev_path:
        nav.append(f'<a rel="prev" href="{prev_path}">Previous</a>')
    if next_path:
        nav.append(f'<a rel="next" href="{next_path}">Next</a>')
    return (
        _head(title) + f'<main>\n<h1>{_e(title)}</h1>\n<ul class="articles">\n{items}\n</ul>\n'
        f"<nav>{' '.join(nav)}</nav>\n</main>\n</body>\n</html>\n"
    )


def _article_html(article: Article, images: list[ImageTruth], rng: random.Random) -> str:
    sections = []
    for im in images:
        parts = ['<section class="story">']
        if im.surrounding:
            parts.append(f"<p>{_e(im.surrounding)}</p>")
        title = f' title="{_e(im.title)}"' if im.title else ""
        parts.append(f'<figure>\n<img src="{im.path}" alt="{_e(im.alt)}"{title}>')
        if im.figcaption:
            parts.append(f"<figcaption>{_e(im.figcaption)}</figcaption>")
        parts.append("</figure>\n</section>")
        sections.append("\n".join(parts))
    footer = vocab.filler(article.topic, rng, 1)
    return (
        _head(article.headline, article.charset, article.optout)
        + f"<article>\n<h1>{_e(article.headline)}</h1>\n"
        f'<p class="intro">{_e(article.intro)}</p>\n'
        + "\n".join(sections)
        + f'\n</article>\n<footer><p>{_e(footer)}</p>\n<a href="{article.index_path}">Back</a></footer>\n'
        "</body>\n</html>\n"
    )
