"""``brivl demo``: serve the demo web, or write its held-out eval sets."""

from __future__ import annotations

import argparse
import sys
import time

HELP = "serve the demo web on 127.0.0.1 (until Ctrl-C) or write its held-out eval sets"


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
    for name, default in (("zeroshot", 200), ("retrieval", 100), ("text", 200), ("vqa", 200)):
        evals.add_argument(
            f"--n-{name}", type=int, default=default, help=f"rows (default {default})"
        )


def _site_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=int, default=3000, help="images on the site (default 3000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from brivl.demo import DemoConfig, build_site

    config = DemoConfig(
        n_images=args.images, seed=args.seed, slow_seconds=getattr(args, "slow_seconds", 3.0)
    )
    try:
        site = build_site(config)
    except ValueError as exc:
        print(f"brivl demo: {exc}", file=sys.stderr)
        return 2
    if args.demo_command == "serve":
        return _serve(site, args.host, args.port)
    return _eval_sets(site, args)


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


def _eval_sets(site, args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from brivl.report import print_table

    paths = site.eval_sets(
        args.out,
        n_zeroshot=args.n_zeroshot,
        n_retrieval=args.n_retrieval,
        n_text=args.n_text,
        n_vqa=args.n_vqa,
    )
    rows = [
        {"set": name, "rows": pq.ParquetFile(path).metadata.num_rows, "file": str(path)}
        for name, path in paths.items()
        if path.suffix == ".parquet"
    ]
    print_table("demo eval sets (unseen object-colour pairs)", rows)
    return 0
