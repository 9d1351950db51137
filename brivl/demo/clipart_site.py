"""The real demo web: a clip-art gallery of Debian's OpenClipArt pictures, served on loopback.

:func:`build_clipart_site` plans every page from the catalogue and :class:`ClipArtConfig`
(same inputs ⇒ byte-identical pages); :func:`openclipart_site` fetches the corpus first
(raising :class:`~brivl.demo.openclipart.CorpusUnavailable` where it cannot). The result
serves through :func:`brivl.demo.serve` like the synthetic web. Layout (depth ≤ 2)::

    /robots.txt                         disallows /private/ (and everything to GPTBot)
    /                                   every category's first page, grouped; /private/
    /category/<folder>/[page/K/]        up to page_size pictures each, numbered pager
    /private/, /private/uploads-K.html  members' pages, robots-disallowed (robots_page)
    /img/<folder>/<name>.jpg            the package's picture on white as JPEG (converted on
                                        first request, cached beside the PNG tree); /png/…png
                                        with image_format="png" (the package's bytes);
                                        /private/img/… (robots); …-loop.jpg (redirect loop hop)

JPEG is the default because img2dataset's PNG path (decode, float alpha matting) costs
~10-15 ms CPU per picture against ~1.7 ms for the same picture as JPEG, and converting once
costs ~3.5 ms (500 package pictures, one core).

Text around a picture is what such galleries show: title, tags, a short description. As
stock-art sites do, the description starts with the picture's main colours and the tags
cell lists them first (computed from the pixels, :mod:`brivl.colours`).

Faults are the synthetic web's download faults (:data:`brivl.demo.site.DOWNLOAD_FAULTS`),
``fault_share`` of the pictures each (at least one), served by
:func:`brivl.demo.site.fault_response`; ``optout_meta`` opts a whole category page out.
Held-out pictures (:mod:`brivl.demo.holdout`) are on no page, and their paths are 404.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from brivl.colours import jpeg_colour_names
from brivl.demo.clipart_pages import (
    SITE_NAME,
    Listing,
    Markup,
    category_path,
    home_html,
    listing_html,
)
from brivl.demo.holdout import Holdout, HoldoutConfig, split_holdout
from brivl.demo.openclipart import PNG_ROOT, ClipArt, cache_dir, load_catalogue, to_jpeg
from brivl.demo.site import (
    BOMB_SIDE,
    DOWNLOAD_FAULTS,
    ImageTruth,
    Response,
    _error,
    _ok,
    _redirect,
    fault_response,
)

PAGE_FAULTS = ("robots_page", "optout_meta")
SINGLE_FAULTS = tuple(k for k in DOWNLOAD_FAULTS if k not in PAGE_FAULTS)
NOT_SERVED = ("http_404", "http_500", "not_image", "redirect_loop")
BOILERPLATE_ALTS = ("click to enlarge", "thumbnail", "image", "preview", "enlarge")
HTML = "text/html; charset=utf-8"
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class ClipArtConfig:
    """What clip-art site to build; everything about it follows from these and the catalogue."""

    n_images: int | None = None  # pictures on the site, faults included (None: all site ones,
    max_images: int | None = None  # ... or at most this many)
    seed: int = 0
    slow_seconds: float = 3.0  # a "slow" body stalls this long half-way
    fault_share: float = 0.01  # share of pictures per download fault kind (at least one)
    page_size: int = 24  # pictures per category page
    image_format: str = "jpeg"  # "jpeg" (on white, converted once) or "png" (package bytes)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)


@dataclass
class ClipArtSite:
    """The planned site: truth per picture (:class:`ImageTruth`), pages, responses."""

    config: ClipArtConfig
    root: Path  # the PNG tree
    jpeg_dir: Path  # where converted JPEGs are kept
    holdout: Holdout
    images: list[ImageTruth]
    listings: list[Listing]
    robots_txt: str
    _pages: dict[str, tuple[bytes, str]] = field(repr=False, default_factory=dict)
    _files: dict[str, str] = field(repr=False, default_factory=dict)  # image path → PNG

    def __post_init__(self) -> None:
        self._by_path = {im.path: im for im in self.images}
        self._loops = {loop_hop(im.path): im.path for im in self.images
                       if im.fault == "redirect_loop"}

    def image(self, path: str) -> ImageTruth:
        return self._by_path[path]

    def fault_counts(self) -> dict[str, int]:
        """Pictures per fault kind (``"clean"`` for none), every kind listed."""
        counts = Counter(im.fault or "clean" for im in self.images)
        return {kind: counts.get(kind, 0) for kind in ("clean", *DOWNLOAD_FAULTS)}

    def page_paths(self, include_private: bool = False) -> list[str]:
        """Every HTML page path (home, category pages; members' pages on request)."""
        return [p for p, (_, ctype) in self._pages.items() if ctype == HTML
                and (include_private or not p.startswith("/private/"))]

    def paths(self) -> list[str]:
        """Every path answered with content (pages, robots.txt, pictures, loop hops)."""
        return sorted(self._pages) + [im.path for im in self.images] + sorted(self._loops)

    def image_bytes(self, path: str) -> bytes:
        """The picture behind a path (PNG or JPEG, see ``image_format``), ignoring its fault."""
        file = self._files[path]
        if self.config.image_format == "png":
            return (self.root / file).read_bytes()
        return cached_jpeg(self.root, self.jpeg_dir, file)

    def warm(self) -> int:
        """Convert every served picture now (e.g. before timing a download); returns how many."""
        paths = [im.path for im in self.images if im.width and im.fault != "bomb"]
        for path in paths:
            self.image_bytes(path)
        return len(paths)

    def response(self, path: str) -> Response:
        """The response for a URL path (query string ignored); unknown paths are 404."""
        path = path.split("?", 1)[0].split("#", 1)[0] or "/"
        if path in self._pages:
            return _ok(*self._pages[path])
        if path in self._loops:
            return _redirect(self._loops[path])
        truth = self._by_path.get(path)
        if truth is None:
            return _error(404, "Not Found")
        return fault_response(
            truth.fault,
            lambda: self.image_bytes(truth.path),
            ctype=IMAGE_FORMATS[self.config.image_format],
            loop_path=loop_hop(truth.path),
            odd=truth.index % 2 == 1,
            slow_seconds=self.config.slow_seconds,
        )

    def heldout_key(self) -> str:
        """A short identity of the held-out pictures (names the eval sets' directory)."""
        files = "\n".join(sorted(i.file for i in self.holdout.heldout))
        return hashlib.sha256(files.encode()).hexdigest()[:12]

    def eval_sets(self, out_dir: str | Path, **sizes: int) -> dict[str, Path]:
        """Write the held-out eval sets (see :mod:`brivl.demo.clipart_evals`); name → path."""
        from brivl.demo.clipart_evals import write_clipart_eval_sets

        return write_clipart_eval_sets(self.holdout, self.root, out_dir, **sizes)


def cached_jpeg(root: Path, jpeg_dir: Path, file: str) -> bytes:
    """The package PNG ``root/file`` on white as JPEG, converted once into ``jpeg_dir``."""
    cached = jpeg_dir / f"{file[:-4]}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    body = to_jpeg(root / file)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, cached)
    return body


def picture_colours(root: Path, jpeg_dir: Path, items: list[ClipArt]) -> dict[str, tuple[str, ...]]:
    """Each picture's main colour names, read from its JPEG (converted now if need be: the
    download would convert it anyway); two threads, since decoding releases the GIL."""

    def one(item: ClipArt) -> tuple[str, ...]:
        try:
            return jpeg_colour_names(cached_jpeg(root, jpeg_dir, item.file))
        except (OSError, ValueError, Image.DecompressionBombError):
            return ()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip((i.file for i in items), pool.map(one, items), strict=True))


def picture_path(file: str, image_format: str = "jpeg") -> str:
    """The URL path of a package PNG on the site (see the module docstring)."""
    return f"/png/{file}" if image_format == "png" else f"/img/{file[:-4]}.jpg"


def loop_hop(path: str) -> str:
    """The redirect loop's second hop for a picture path."""
    stem, _, ext = path.rpartition(".")
    return f"{stem}-loop.{ext}"


def openclipart_site(config: ClipArtConfig | None = None, cache: str | Path | None = None):
    """Fetch the corpus if needed (may raise ``CorpusUnavailable``) and plan its site."""
    catalogue = load_catalogue(cache)
    return build_clipart_site(catalogue, cache_dir(cache) / PNG_ROOT, config)


def build_clipart_site(
    catalogue: list[ClipArt], png_root: str | Path, config: ClipArtConfig | None = None
) -> ClipArtSite:
    """Plan the site of ``catalogue`` (PNG files below ``png_root``; converted JPEGs are
    kept in ``jpeg-q90`` beside it)."""
    return _Planner(catalogue, Path(png_root), config or ClipArtConfig()).build()


# --- planning ----------------------------------------------------------------------------------


class _Planner:
    def __init__(self, catalogue: list[ClipArt], root: Path, config: ClipArtConfig) -> None:
        if not 0 < config.fault_share < 0.05:
            raise ValueError(f"fault_share={config.fault_share}: must be in (0, 0.05)")
        if config.page_size < 1:
            raise ValueError(f"page_size={config.page_size}: must be >= 1")
        if config.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format={config.image_format!r}; accepted: "
                             f"{list(IMAGE_FORMATS)}")
        self.config, self.root = config, root
        self.rng = random.Random(f"brivl-clipart:{config.seed}")
        self.holdout = split_holdout(catalogue, config.holdout)

    def build(self) -> ClipArtSite:
        pool = self._pool()
        self.jpeg_dir = self.root.parent / "jpeg-q90"
        self.colours = picture_colours(self.root, self.jpeg_dir, pool)
        k = max(1, round(len(pool) * self.config.fault_share))
        private, public = pool[:k], pool[k:]
        pages = self._paginate(public)
        optout = self._optout_pages(pages, k)
        faults = self._single_faults(pages, optout, k, len(pool))
        images, marks, files, listings = [], {}, {}, []
        for category, number, items in pages:
            listing = self._listing(category, number, pages, items, optout, faults, images,
                                    marks, files)
            listings.append(listing)
        private_listings = self._private(private, images, marks, files)
        site_pages = self._render(listings, private_listings, images, marks)
        return ClipArtSite(self.config, self.root, self.jpeg_dir, self.holdout, images,
                           listings + private_listings, ROBOTS_TXT, site_pages, files)

    def _pool(self) -> list[ClipArt]:
        pool = sorted(self.holdout.site, key=lambda i: i.file)
        self.rng.shuffle(pool)
        n = self.config.n_images
        if n is None and self.config.max_images is not None:
            n = min(self.config.max_images, len(pool))
        if n is not None and not 0 < n <= len(pool):
            raise ValueError(f"n_images={n}: this catalogue has 1..{len(pool)} site pictures")
        return pool[:n] if n is not None else pool

    def _paginate(self, items: list[ClipArt]) -> list[tuple[str, int, list[ClipArt]]]:
        by_category: dict[str, list[ClipArt]] = {}
        for item in items:
            by_category.setdefault(item.category, []).append(item)
        size = self.config.page_size
        return [
            (category, start // size + 1, members[start : start + size])
            for category, members in sorted(by_category.items())
            for start in range(0, len(members), size)
        ]

    def _optout_pages(self, pages, k: int) -> set[tuple[str, int]]:
        """Category pages carrying a robots noai meta, >= k pictures: small pages only, later
        pages (not a category's first) where they suffice."""
        def rank(page) -> str:
            return hashlib.sha256(f"{self.config.seed}:{page[0]}:{page[1]}".encode()).hexdigest()

        small = [p for p in pages if len(p[2]) <= max(2 * k, self.config.page_size // 2)]
        later = sorted((p for p in small if p[1] >= 2), key=rank)
        ordered = later if sum(len(p[2]) for p in later) >= k else sorted(small, key=rank)
        chosen: set[tuple[str, int]] = set()
        held = 0
        for category, number, items in ordered:
            if held >= k:
                break
            chosen.add((category, number))
            held += len(items)
        return chosen

    def _single_faults(self, pages, optout, k: int, n: int) -> dict[str, str]:
        free = [i.file for c, num, items in pages if (c, num) not in optout for i in items]
        need = k * len(SINGLE_FAULTS) + max(10, 2 * k)
        if len(free) < need:
            raise ValueError(
                f"n_images={n} is too small to hold every fault kind with fault_share="
                f"{self.config.fault_share}; use n_images >= {n - len(free) + need}"
            )
        picked = self.rng.sample(free, k * len(SINGLE_FAULTS))
        return {file: SINGLE_FAULTS[j // k] for j, file in enumerate(picked)}

    def _listing(self, category, number, pages, items, optout, faults, images, marks, files):
        paths = [category_path(c, num) for c, num, _ in pages if c == category]
        path = paths[number - 1]
        kind = "optout_meta" if (category, number) in optout else None
        placed = [self._place(item, kind or faults.get(item.file), path, images, marks, files)
                  for item in items]
        members = [i for c, _, its in pages if c == category for i in its]
        return Listing(path, _heading(items[0].category_name), _intro(members), tuple(placed),
                       category, number, tuple(paths), kind is not None)

    def _private(self, items, images, marks, files) -> list[Listing]:
        size = self.config.page_size
        paths = tuple(f"/private/uploads-{k + 1}.html" for k in range(-(-len(items) // size)))
        listings = []
        for number, path in enumerate(paths, start=1):
            chunk = items[(number - 1) * size : number * size]
            placed = [self._place(i, "robots_page", path, images, marks, files) for i in chunk]
            listings.append(Listing(path, "Members' uploads", _intro(chunk), tuple(placed),
                                    number=number, pages=paths))
        return listings

    def _place(self, item, fault, page, images, marks, files) -> str:
        """Add one picture to the site (truth, markup, file); return its path."""
        mark = self._markup(item)
        truth = self._truth(item, fault, page, len(images), mark)
        images.append(truth)
        marks[truth.path] = mark
        files[truth.path] = item.file
        return truth.path

    def _truth(self, item: ClipArt, fault, page: str, index: int, mark: Markup) -> ImageTruth:
        path = picture_path(item.file, self.config.image_format)
        if fault == "bomb":  # the bomb is a PNG whatever the site serves
            path = f"{path.rpartition('.')[0]}.png"
        if fault == "robots":
            path = f"/private{path}"
        size = (BOMB_SIDE, BOMB_SIDE) if fault == "bomb" else (item.width, item.height)
        served = fault not in NOT_SERVED
        labels = {
            "file": item.file,
            "category": item.category,
            "category_name": item.category_name,
            "title": item.title,
            "keywords": list(item.keywords),
            "creator": item.creator,
            "licence": item.licence,
            "layout": mark.layout,
        }
        return ImageTruth(path=path, page_path=page, fault=fault, labels=labels,
                          caption=item.title, alt=mark.alt, title=mark.title_attr,
                          figcaption=mark.beside, surrounding=mark.paragraph, index=index,
                          width=size[0] if served else None, height=size[1] if served else None)

    def _markup(self, item: ClipArt) -> Markup:
        rng, colours = self.rng, self.colours[item.file]
        layout = rng.choice(("figure", "card", "row", "srcset", "picture"))
        r = rng.random()
        if r < 0.35:
            alt = item.title
        elif r < 0.55:
            alt = _one_word(item, rng)
        elif r < 0.8:
            alt = ""
        else:
            alt = rng.choice(BOILERPLATE_ALTS)
        title_attr = f"{item.title} - free clip art" if rng.random() < 0.15 else ""
        beside = item.title if rng.random() < 0.8 else f"{item.title} - {item.category_name}"
        if layout == "row":  # the tags cell: colour tags first, as stock-art sites list them
            paragraph = ", ".join([*colours, *item.keywords[:5]])
        else:
            paragraph = _paragraph(item, colours, rng) if rng.random() < 0.7 else ""
        return Markup(layout, rng.random() < 0.5, alt, title_attr, beside, paragraph,
                      "h3" if rng.random() < 0.5 else "span")

    def _render(self, listings, private, images, marks) -> dict[str, tuple[bytes, str]]:
        by_path = {im.path: im for im in images}
        pages: dict[str, tuple[bytes, str]] = {}
        for listing in listings + private:
            pictures = [by_path[p] for p in listing.image_paths]
            pages[listing.path] = (listing_html(listing, pictures, marks).encode(), HTML)
        home = home_html(_groups(listings), _home_intro(images, listings)).encode()
        pages["/"] = pages["/index.html"] = (home, HTML)
        pages["/private/"] = (_private_index(private).encode(), HTML)
        pages["/robots.txt"] = (ROBOTS_TXT.encode(), "text/plain; charset=utf-8")
        return pages


ROBOTS_TXT = (
    f"# robots.txt of the {SITE_NAME} (brivl demo web)\n"
    "User-agent: GPTBot\nDisallow: /\n\nUser-agent: *\nDisallow: /private/\n"
)


def _heading(name: str) -> str:
    return f"{name[:1].upper()}{name[1:]} clip art"


def _one_word(item: ClipArt, rng: random.Random) -> str:
    words = [k for k in item.keywords if " " not in k and len(k) > 2]
    return rng.choice(words) if words else item.category_name.split()[-1]


def _paragraph(item: ClipArt, colours: tuple[str, ...], rng: random.Random) -> str:
    kws = list(item.keywords[:4]) or [item.category_name]
    creator = item.creator or "an anonymous artist"
    options = (
        f"Tagged {', '.join(kws)}.",
        f"Drawn by {creator} for the {item.category_name} collection.",
        f"More {item.category_name} clip art below: free to use, no attribution needed.",
        f"Uploaded by {creator}. Keywords: {' '.join(kws)}.",
        f"From the {item.category_name} collection, by {creator}; see also {rng.choice(kws)}.",
    )
    text = rng.choice(options)
    return f"{_colour_phrase(colours)} {text}" if colours else text


def _colour_phrase(colours: tuple[str, ...]) -> str:
    """``("red", "black")`` -> ``"In red and black."`` (the picture's main colours)."""
    return f"In {' and '.join(colours)}."


def _intro(items: list[ClipArt]) -> str:
    if not items:
        return ""
    tags = Counter(k for i in items for k in i.keywords)
    creators = Counter(i.creator for i in items if i.creator)
    name = items[0].category_name
    text = f"{len(items)} free {name} pictures from the Open Clip Art Library."
    if tags:
        text += f" Popular tags: {', '.join(t for t, _ in tags.most_common(3))}."
    if creators:
        text += f" Drawn by {' and '.join(c for c, _ in creators.most_common(2))}."
    return text


def _groups(listings: list[Listing]) -> dict[str, list[tuple[str, str, int]]]:
    counts = Counter(lst.category for lst in listings for _ in lst.image_paths)
    groups: dict[str, list[tuple[str, str, int]]] = {}
    for listing in listings:
        if listing.number != 1:
            continue
        group = listing.category.split("/", 1)[0].replace("_", " ").capitalize()
        name = listing.heading.removesuffix(" clip art")
        groups.setdefault(group, []).append((name, listing.path, counts[listing.category]))
    return groups


def _home_intro(images: list[ImageTruth], listings: list[Listing]) -> str:
    categories = {lst.category for lst in listings if lst.category}
    return (
        f"{len(images)} free clip-art pictures in {len(categories)} categories, drawn by the "
        "Open Clip Art Library's artists and dedicated to the public domain."
    )


def _private_index(private: list[Listing]) -> str:
    items = "\n".join(f'<li><a href="{lst.path}">Uploads, page {lst.number}</a></li>'
                      for lst in private)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Members\' '
        f"uploads | {SITE_NAME}</title>\n</head>\n<body>\n<h1>Members' uploads</h1>\n<ul>\n"
        f'{items}\n</ul>\n<p><a href="/">Home</a></p>\n</body>\n</html>\n'
    )
