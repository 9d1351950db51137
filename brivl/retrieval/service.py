"""Serve and query a retrieval index with clip-retrieval's ``clip_back`` and our model.

The kNN service is clip-retrieval's own: its ``KnnService``, ``MetadataService``,
``IndicesList`` and ``MetricsSummary`` resources, its index and metadata loaders
(``load_clip_index``), its ``/metrics`` endpoint and, when present, its web front. Only the
model loader is replaced (:mod:`brivl.retrieval.adapter`), and the app is served on
127.0.0.1 by a werkzeug server we can start and stop, instead of ``clip_back()``'s
``app.run(host="0.0.0.0")``.

POST ``/knn-service`` takes clip_back's JSON: one of ``text``, ``image`` (base64 bytes),
``image_url`` or ``embedding_input`` (a vector), plus ``modality`` (``"image"`` searches
image embeddings, ``"text"`` searches caption embeddings), ``num_images`` (k) and
``indice_name``; it answers ``[{"id", "similarity", "key", "caption", "url", "split"}, ...]``.

The two POST resources are clip_back's with their input checked first
(:mod:`brivl.retrieval.knn_api`): a bad request is a 400 naming the field, a body over the
limit a 413, and ``image_url`` is fetched through the SSRF guard, never by clip_back's
urllib. CORS is off unless origins are allow-listed (``cors_origins``).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from brivl.compat.clip_retrieval import all_clip_shim, clip_back
from brivl.errors import ConfigError
from brivl.manifest import read_manifest
from brivl.retrieval.adapter import ClipAdapter, Encoder
from brivl.retrieval.build import INDICES_PATHS, METADATA_COLUMNS
from brivl.retrieval.knn_api import (
    NOT_APPLIED_HEADER,
    ImageFetcher,
    ServiceLimits,
    bad,
    check_origins,
    parse_knn_request,
    parse_metadata_request,
)

DEFAULT_PORT = 1234  # clip_back's default


def clip_options(**overrides: Any) -> Any:
    """clip_back ``ClipOptions`` for our indices: no mclip, safety, violence or aesthetic
    models (they are CLIP-specific downloads), parquet metadata, no faiss memory-mapping."""
    values: dict[str, Any] = {
        "indice_folder": "",
        "clip_model": "brivl",
        "enable_hdf5": False,
        "enable_faiss_memory_mapping": False,
        "columns_to_return": list(METADATA_COLUMNS),
        "reorder_metadata_by_ivf_index": False,
        "enable_mclip_option": False,
        "use_jit": False,
        "use_arrow": False,
        "provide_safety_model": False,
        "provide_violence_detector": False,
        "provide_aesthetic_embeddings": False,
    }
    values.update(overrides)
    return clip_back().ClipOptions(**values)


def indices_paths_file(index: str | Path) -> Path:
    """``indices_paths.json`` of an index stage directory (or the file itself)."""
    path = Path(index)
    path = path / INDICES_PATHS if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"{index}: no {INDICES_PATHS}; pass an index stage directory (written by "
            "`brivl index` or the pipeline's index stage) or its indices_paths.json"
        )
    return path


class ArrowMetadataProvider:
    """clip_back's metadata-provider interface (``get(ids, cols) -> [dict]``) over the
    ``metadata/*.parquet`` files held as one Arrow table.

    clip_back's own ``ParquetMetadataProvider`` slices a pandas frame once per result row
    (milliseconds per row: most of a query's time on a 100k index, see bench/serve.py), and
    its Arrow provider needs Arrow IPC files instead of clip-retrieval's parquet layout.
    """

    def __init__(self, parquet_folder: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = sorted(Path(parquet_folder).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{parquet_folder}: no metadata parquet files")
        self.table = pa.concat_tables(pq.read_table(f) for f in files)

    def get(self, ids: Any, cols: list[str] | None = None) -> list[dict[str, Any]]:
        names = self.table.schema.names
        cols = names if cols is None else [c for c in names if c in set(cols)]
        rows = np.asarray(ids, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.table.num_rows):
            raise IndexError(
                f"metadata ids must be in [0, {self.table.num_rows}), got {rows.tolist()}"
            )
        return self.table.select(cols).take(rows).to_pylist()


def load_resources(
    index: str | Path, encoder: Encoder, fast_metadata: bool = True, **options: Any
) -> dict[str, Any]:
    """``{indice_name: clip_back.ClipResource}`` with our encoder as the query model.

    Mirrors ``clip_back.load_clip_indices`` (one ``load_clip_index`` per entry of
    ``indices_paths.json``) and resolves a folder that is relative, or that moved along with
    the JSON, against the JSON's directory. ``fast_metadata`` swaps clip_back's parquet
    metadata provider for :class:`ArrowMetadataProvider` (same interface and results).
    """
    cb = clip_back()
    paths_file = indices_paths_file(index)
    entries = json.loads(paths_file.read_text())
    base = clip_options(**options)
    resources = {}
    with all_clip_shim(ClipAdapter(encoder).load_clip):
        for name, entry in entries.items():
            entry = {"indice_folder": entry} if isinstance(entry, str) else dict(entry)
            entry["indice_folder"] = str(_locate(entry["indice_folder"], paths_file.parent))
            opts = cb.dict_to_clip_options(entry, base)
            resource = cb.load_clip_index(opts)
            if fast_metadata and not (opts.use_arrow or opts.enable_hdf5):
                provider = ArrowMetadataProvider(Path(opts.indice_folder) / "metadata")
                resource = dataclasses.replace(resource, metadata_provider=provider)
            resources[name] = resource
    return resources


def _locate(folder: str, base: Path) -> Path:
    path = Path(folder)
    if not path.is_absolute():
        path = base / path
    if not path.is_dir() and (base / path.name).is_dir():
        path = base / path.name
    if not path.is_dir():
        raise FileNotFoundError(
            f"index folder {folder} (from {base / INDICES_PATHS}) does not exist"
        )
    return path


def _dimension(resource: Any) -> int | None:
    index = resource.image_index or resource.text_index
    return None if index is None else int(index.d)


def guarded_resources(resources: dict[str, Any], limits: ServiceLimits) -> tuple[type, type]:
    """clip_back's ``KnnService`` and ``MetadataService`` with their requests checked."""
    from flask import request

    cb = clip_back()
    dims = {name: _dimension(resource) for name, resource in resources.items()}
    fetch_image = ImageFetcher(limits)

    class KnnService(cb.KnnService):
        def post(self) -> Any:
            with cb.FULL_KNN_REQUEST_TIME.time():
                body = request.get_json(force=True)
                params = parse_knn_request(body, dims, limits, fetch_image)
                not_applied = params.pop("not_applied")
                headers = {NOT_APPLIED_HEADER: ", ".join(not_applied)} if not_applied else {}
                return self.query(**params), 200, headers

    class MetadataService(cb.MetadataService):
        def post(self) -> Any:
            ids, name = parse_metadata_request(request.get_json(force=True), dims, limits)
            if not ids:
                return []
            resource = self.clip_resources[name]
            try:
                metas = resource.metadata_provider.get(ids, resource.columns_to_return)
            except IndexError as exc:
                raise bad("ids", str(exc)) from None
            for meta in metas:
                cb.convert_metadata_to_base64(meta)
            return [{"id": i, "metadata": cb.meta_to_dict(m)} for i, m in zip(ids, metas, strict=True)]

    return KnnService, MetadataService


def create_app(
    resources: dict[str, Any],
    front: bool = True,
    cors_origins: tuple[str, ...] = (),
    limits: ServiceLimits | None = None,
) -> Any:
    """clip_back's Flask app over ``resources`` (the body of ``clip_back.clip_back``), with
    checked requests; cross-origin requests are allowed from ``cors_origins`` only."""
    from flask import Flask
    from flask_cors import CORS
    from flask_restful import Api
    from prometheus_client import make_wsgi_app
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    cb = clip_back()
    limits = limits or ServiceLimits()
    origins = check_origins(cors_origins)
    knn, metadata = guarded_resources(resources, limits)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})
    if front:
        _add_front(app)
    api = Api(app)
    api.add_resource(cb.Health, "/health")
    api.add_resource(cb.MetricsSummary, "/metrics-summary")
    api.add_resource(
        cb.IndicesList, "/indices-list", resource_class_kwargs={"indices": list(resources)}
    )
    api.add_resource(metadata, "/metadata", resource_class_kwargs={"clip_resources": resources})
    api.add_resource(knn, "/knn-service", resource_class_kwargs={"clip_resources": resources})
    if origins:
        CORS(app, origins=origins)
    return app


def _add_front(app: Any) -> None:
    """clip-retrieval's web UI (``front/build``), as ``clip_front.add_static_endpoints`` adds
    it, located without ``pkg_resources`` (gone from current setuptools)."""
    from flask import request, send_from_directory

    spec_dir = Path(clip_back().__file__).parent
    build = (spec_dir.parent / "front" / "build").resolve()
    if not (build / "index.html").is_file():
        return

    def index_html() -> Any:
        return send_from_directory(build, "index.html")

    def config_json() -> str:
        return json.dumps(
            {"defaultBackend": request.host_url, "defaultIndex": "", "urlColumn": "url"}
        )

    def static_file(path: str) -> Any:
        return send_from_directory(build, path)

    app.add_url_rule("/", "front_index", index_html)
    app.add_url_rule("/config.json", "front_config", config_json)
    app.add_url_rule("/<path:path>", "front_static", static_file)


class SearchServer:
    """The kNN service on a loopback port; ``start()`` serves in a background thread."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_requests: bool = True
    ) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Handler(WSGIRequestHandler):
            # keep-alive: a client's connection keeps its handler thread, instead of a new
            # TCP connection and thread per query (HTTP/1.0, what clip_back's app.run does)
            protocol_version = "HTTP/1.1"

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                if log_requests:
                    super().log_request(*args, **kwargs)

        self._server = make_server(host, port, app, threaded=True, request_handler=Handler)
        self.host, self.port = host, self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SearchServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="knn-service", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SearchServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def check_k(k: object, what: str = "k") -> int:
    """``k`` when it is a result count a query may ask for (1 .. ``ServiceLimits.max_k``)."""
    top = ServiceLimits.max_k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= top:
        raise ConfigError(f"{what}: {k!r} is not accepted; accepted: an integer from 1 to {top}")
    return k


def image_to_base64(image: Image.Image | bytes | str | Path) -> str:
    """The ``image`` field of a /knn-service request: base64 of encoded image bytes."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        data = buffer.getvalue()
    elif isinstance(image, bytes):
        data = image
    else:
        data = Path(image).read_bytes()
    return base64.b64encode(data).decode("ascii")


@dataclass
class SearchIndex:
    """A loaded index: query it in process (through clip_back's ``KnnService.query``) or
    serve it over HTTP."""

    index_dir: Path
    encoder: Encoder
    resources: dict[str, Any]

    @classmethod
    def open(
        cls, index_dir: str | Path, encoder: Encoder | None = None, **options: Any
    ) -> SearchIndex:
        """Load an index stage directory; the encoder defaults to the checkpoint it was built with."""
        index_dir = Path(index_dir).resolve()
        if encoder is None:
            encoder = load_encoder(index_checkpoint(index_dir))
        resources = load_resources(index_dir, encoder, **options)
        dim = getattr(encoder, "dim", None)
        for name, resource in resources.items():
            index = resource.image_index or resource.text_index
            if dim is not None and index is not None and index.d != dim:
                raise ValueError(
                    f"{index_dir}: index {name!r} holds {index.d}-d embeddings but the model gives "
                    f"{dim}-d ones; query with the model the index was built with"
                )
        return cls(index_dir, encoder, resources)

    @property
    def names(self) -> list[str]:
        return list(self.resources)

    def query(
        self,
        text: str | None = None,
        image: Image.Image | bytes | str | Path | None = None,
        embedding: np.ndarray | list[float] | None = None,
        modality: str = "image",
        k: int = 10,
        indice_name: str | None = None,
        deduplicate: bool = False,
    ) -> list[dict[str, Any]]:
        """Top-``k`` neighbours, best first: dicts with id, similarity and the metadata."""
        check_k(k)
        if modality not in ("image", "text"):
            raise ValueError(
                f"modality {modality!r}: use 'image' (search images) or 'text' (search captions)"
            )
        if sum(x is not None for x in (text, image, embedding)) != 1:
            raise ValueError("give exactly one of text, image or embedding")
        service = clip_back().KnnService(clip_resources=self.resources)
        return service.query(
            text_input=text,
            image_input=None if image is None else image_to_base64(image),
            embedding_input=None
            if embedding is None
            else np.asarray(embedding, np.float32).tolist(),
            modality=modality,
            num_images=k,
            num_result_ids=k,
            indice_name=indice_name,
            deduplicate=deduplicate,
        )

    def app(
        self,
        front: bool = True,
        cors_origins: tuple[str, ...] = (),
        limits: ServiceLimits | None = None,
    ) -> Any:
        return create_app(self.resources, front=front, cors_origins=cors_origins, limits=limits)

    def server(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        log_requests: bool = True,
        cors_origins: tuple[str, ...] = (),
        limits: ServiceLimits | None = None,
    ) -> SearchServer:
        """An HTTP server for this index (not started)."""
        app = self.app(cors_origins=cors_origins, limits=limits)
        return SearchServer(app, host=host, port=port, log_requests=log_requests)


def index_checkpoint(index_dir: str | Path) -> str:
    """The model checkpoint (path or URI) an index stage directory was built with."""
    body = read_manifest(index_dir)
    checkpoint = body.get("extra", {}).get("checkpoint")
    if not checkpoint:
        raise ValueError(
            f"{index_dir}: manifest names no checkpoint (extra.checkpoint); pass the model"
        )
    return str(checkpoint)


def load_encoder(checkpoint: str) -> Encoder:
    """``brivl.inference.load`` (imported here: it loads torch models)."""
    from brivl.inference import load

    return load(checkpoint)


def find_indexes(root: str | Path, checkpoint_id: str | None = None) -> list[Path]:
    """Complete index stage directories under ``root``, newest first; optionally only those
    built from the checkpoint with identity ``checkpoint_id``."""
    found = []
    for path in Path(root).glob(f"*/{INDICES_PATHS}"):
        try:
            body = read_manifest(path.parent)
        except Exception:  # noqa: BLE001 - unfinished or foreign directory: skip it
            continue
        if body.get("stage") != "index":
            continue
        if checkpoint_id and body.get("extra", {}).get("checkpoint_id") != checkpoint_id:
            continue
        found.append((body.get("created_at", ""), path.parent))
    return [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]


def service_hint(index_dir: str | Path, port: int = DEFAULT_PORT) -> str:
    """How to start the search service for an index (for closing summaries)."""
    return (
        f'search: brivl search "a query" --index {index_dir}\n'
        f"serve:  brivl search --serve --index {index_dir} --port {port}  "
        f"(clip_back on http://127.0.0.1:{port}, POST /knn-service)"
    )
