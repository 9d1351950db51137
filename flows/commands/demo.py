"""``brivl demo``: serve a demo web, or write its held-out eval sets.

Two demo webs (``--web``): ``openclipart`` (default: Debian's OpenClipArt pictures as a
clip-art gallery, fetched once with apt) and ``synthetic`` (generated shapes with every
injected fault kind). Where OpenClipArt cannot be fetched, one line says why and the
synthetic web is used.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from flows.commands import checked

HELP = "serve the demo web on 127.0.0.1 (until Ctrl-C) or write its held-out eval sets"
ORCHESTRATED = False  # runs no Prefect flow or task: its database is not prepared
DEMO_WEBS = ("openclipart", "synthetic")
SYNTHETIC_IMAGES = 3000
# 5,000 of the 6,954 OpenClipArt pictures not held out, so that `make run` (install included)
# fits 10 minutes on 2 cores; `--demo-images 6954` serves every one (data stages ~75 s)
OPENCLIPART_IMAGES = 5000  # at most; fewer when the catalogue has fewer site pictures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="serve the demo web until Ctrl-C; prints the seed URL")
    _site_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    serve.add_argument(
        "--slow-seconds",
        type=float,
        default=3.0,
        help="how long a 'slow' image body stalls half-way",
    )
    evals = sub.add_parser("eval-sets", help="write the held-out eval Parquet sets into OUT")
    evals.add_argument("out", help="output directory")
    _site_arguments(evals)
    for name, default in (("zeroshot", "200; openclipart 400"), ("retrieval", "100; openclipart 400"),
                          ("text", "200; synthetic only"), ("vqa", "200; synthetic only")):
        evals.add_argument(f"--n-{name}", type=int, default=None, help=f"rows (default {default})")


def _site_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web", choices=DEMO_WEBS, default="openclipart",
                        help="which demo web (default openclipart; synthetic: generated shapes)")
    parser.add_argument("--images", type=int, default=None,
                        help=f"images on the site (default: synthetic {SYNTHETIC_IMAGES}, "
                        "openclipart every picture not held out)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")


def check_images(value: int | None, flag: str = "--images") -> None:
    """Refuse a site size below one picture before anything is built or fetched (the
    catalogue's upper bound is checked when the site is built)."""
    from brivl.errors import InputError

    if value is not None and value < 1:
        raise InputError(f"{flag}: {value} is not accepted; accepted: an integer >= 1")


def check(args: argparse.Namespace) -> None:
    """The site size, before the OpenClipArt corpus is fetched."""
    check_images(args.images)


def build_demo_web(web: str, images: int | None = None, seed: int = 0,
                   slow_seconds: float = 3.0) -> tuple[str, Any]:
    """``(web actually built, site)``; OpenClipArt falls back to synthetic with one line."""
    if web == "openclipart":
        from brivl.demo import ClipArtConfig, CorpusUnavailable, openclipart_site

        try:
            return web, openclipart_site(ClipArtConfig(n_images=images, max_images=OPENCLIPART_IMAGES,
                                                       seed=seed, slow_seconds=slow_seconds))
        except CorpusUnavailable as exc:
            print(f"OpenClipArt not available ({exc}); using the synthetic demo web",
                  file=sys.stderr, flush=True)
            web = "synthetic"
    from brivl.demo import DemoConfig, build_site

    n = images if images is not None else SYNTHETIC_IMAGES
    return "synthetic", build_site(DemoConfig(n_images=n, seed=seed, slow_seconds=slow_seconds))


def run(args: argparse.Namespace) -> int:
    checked(args, check)
    try:
        web, site = build_demo_web(args.web, args.images, args.seed,
                                   getattr(args, "slow_seconds", 3.0))
    except ValueError as exc:
        print(f"brivl demo: {exc}", file=sys.stderr)
        return 2
    if args.demo_command == "serve":
        return _serve(site, args.host, args.port)
    return _eval_sets(web, site, args)


def _serve(site, host: str, port: int) -> int:
    import signal

    from brivl.demo import serve
    from brivl.report import print_table

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a service manager's stop is a Ctrl-C too
    print_table("demo web: images per fault kind", site.fault_counts())
    with serve(site, host=host, port=port) as server:
        print(server.seed_urls[0], flush=True)
        print(
            f"serving {len(site.images)} images at {server.base_url}; Ctrl-C stops", file=sys.stderr
        )
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print(f"stopped after {len(server.access_log)} requests", file=sys.stderr)
    return 0


def eval_set_sizes(web: str, args: argparse.Namespace) -> dict[str, int]:
    """The row counts asked for (or the web's defaults), as ``eval_sets`` keywords."""
    defaults = ({"zeroshot": 400, "retrieval": 400} if web == "openclipart" else
                {"zeroshot": 200, "retrieval": 100, "text": 200, "vqa": 200})
    return {f"n_{name}": value if (value := getattr(args, f"n_{name}", None)) is not None
            else default for name, default in defaults.items()}


def _eval_sets(web: str, site, args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from brivl.report import print_table

    paths = site.eval_sets(args.out, **eval_set_sizes(web, args))
    rows = [
        {"set": name, "rows": pq.ParquetFile(path).metadata.num_rows, "file": str(path)}
        for name, path in paths.items()
        if path.suffix == ".parquet"
    ]
    what = ("held-out OpenClipArt categories and titles" if web == "openclipart"
            else "unseen object-colour pairs")
    print_table(f"demo eval sets ({what})", rows)
    return 0
