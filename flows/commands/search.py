"""``brivl search``: query the retrieval index by text or image, or serve it (clip_back)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "search the corpus by text or image with the model (top-k with scores), or --serve it"
ORCHESTRATED = False  # runs no Prefect flow or task: its database is not prepared


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="text query")
    parser.add_argument("--image", type=Path, help="image query (a file)")
    parser.add_argument("--index", type=Path, help="index stage directory (default: newest built)")
    parser.add_argument(
        "--model",
        help="checkpoint dir or models:/ URI answering queries (default: the one the index was built "
        "with); without --index, picks the newest index built from this model",
    )
    parser.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument(
        "--modality",
        choices=["image", "text"],
        default="image",
        help="search image embeddings (default) or caption embeddings",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--serve", action="store_true", help="start the kNN service (clip_back)")
    parser.add_argument(
        "--port", type=int, default=1234, help="service port on 127.0.0.1 (0: free)"
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="with --serve: allow cross-origin requests from this origin, e.g. "
        "http://localhost:3000 (repeatable; default: none, CORS off)",
    )
    parser.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="with --serve: a non-public network image_url queries may reach "
        "(repeatable; default: public addresses only)",
    )


def run(args: argparse.Namespace) -> int:
    from brivl.retrieval.service import (
        SearchIndex,
        check_k,
        find_indexes,
        load_encoder,
        service_hint,
    )

    check_k(args.k, "-k")
    if not args.serve and not args.text and not args.image:
        print("brivl search: give a text query, --image FILE, or --serve", file=sys.stderr)
        return 2
    if args.text and args.image:
        print("brivl search: give a text query or --image, not both", file=sys.stderr)
        return 2
    index_dir = args.index
    if index_dir is None:
        index_dir = _newest_index(args.model, find_indexes)
        if index_dir is None:
            return 1
    encoder = load_encoder(args.model) if args.model else None
    index = SearchIndex.open(index_dir, encoder)
    if args.serve:
        return _serve(index, args, service_hint)
    results = index.query(
        text=args.text or None, image=args.image, modality=args.modality, k=args.k
    )
    _print(results, args.json)
    return 0


def _newest_index(model: str | None, find_indexes) -> Path | None:
    from brivl.env import project_home

    model_id = None
    if model:
        from tasks.index import model_identity

        model_id = model_identity(model)
    root = project_home() / "data" / "index"
    found = find_indexes(root, model_id)
    if not found:
        which = f" built from {model}" if model else ""
        print(
            f"brivl search: no index{which} under {root}; build one with "
            "`brivl index --checkpoint CKPT --shards SHARD_DIR` (or run the pipeline), "
            "or pass --index DIR",
            file=sys.stderr,
        )
        return None
    return found[0]


def _serve(index, args: argparse.Namespace, service_hint) -> int:
    from brivl.retrieval.knn_api import ServiceLimits

    server = index.server(
        port=args.port,
        cors_origins=tuple(args.cors_origin),
        limits=ServiceLimits(allow_cidrs=tuple(args.allow_cidr)),
    )
    print(f"clip_back kNN service for {index.index_dir}", file=sys.stderr)
    print(f"  {server.url}/knn-service  (indices: {', '.join(index.names)})", file=sys.stderr)
    print(
        f"  curl -s {server.url}/knn-service -d "
        f'\'{{"text": "a photo", "modality": "image", "num_images": 5, '
        f'"indice_name": "{index.names[0]}"}}\'',
        file=sys.stderr,
    )
    print(
        f"  web UI: {server.url}/   metrics: {server.url}/metrics-summary   Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _print(results: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for rank, hit in enumerate(results, 1):
        caption = (hit.get("caption") or "").replace("\n", " ")
        print(
            f"{rank:>3}  {hit['similarity']:.4f}  {hit.get('key', hit['id'])}  {caption}  {hit.get('url') or ''}"
        )
