"""Issue 16: the served kNN API fetches no local file and no internal URL, sends no CORS
header to unknown origins, caps request bodies, and answers bad requests with a 400 that
names the field. Servers bind 127.0.0.1; every request has a timeout."""

from __future__ import annotations

import base64
import io
import time

import pytest
import requests
from PIL import Image

from brivl.retrieval.knn_api import ServiceLimits

LOOPBACK = ("127.0.0.1/32",)
QUERY = {"modality": "image", "num_images": 3, "indice_name": "brivl"}


@pytest.fixture(scope="module")
def server(search_index):
    with search_index.server(port=0, log_requests=False) as srv:
        yield srv


def _post(server, path: str = "/knn-service", **body) -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, timeout=30)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "bad_scheme"),
        ("ftp://127.0.0.1/x.png", "bad_scheme"),
        ("gopher://127.0.0.1:70/_x", "bad_scheme"),
        ("http://169.254.169.254/latest/meta-data/", "ssrf_blocked"),
        ("http://[2002:a9fe:a9fe::1]/", "ssrf_blocked"),
    ],
)
def test_image_url_is_refused_unless_the_guard_allows_it(server, url, reason):
    reply = _post(server, **QUERY, image_url=url)
    assert reply.status_code == 400 and reason in reply.json()["message"]


def test_image_url_to_loopback_needs_the_allow_list(search_index, server, hostile_site):
    url = hostile_site.url("/img/ok.png")
    reply = _post(server, **QUERY, image_url=url)
    assert reply.status_code == 400 and "ssrf_blocked" in reply.json()["message"]
    assert hostile_site.paths == []  # refused before any connection
    with search_index.server(port=0, limits=ServiceLimits(allow_cidrs=LOOPBACK)) as allowed:
        by_url = _post(allowed, **QUERY, image_url=url)
        assert by_url.status_code == 200, by_url.text
        data = requests.get(url, timeout=10).content
        by_bytes = _post(allowed, **QUERY, image=base64.b64encode(data).decode())
        assert by_url.json() == by_bytes.json() and len(by_url.json()) == 3
        not_image = _post(allowed, **QUERY, image_url=hostile_site.url("/ok.html"))
        assert not_image.status_code == 400 and "image_url" in not_image.json()["message"]


def test_cors_is_off_unless_the_origin_is_allow_listed(search_index, server):
    evil = {"Origin": "http://evil.example"}
    reply = requests.get(f"{server.url}/indices-list", headers=evil, timeout=10)
    assert reply.status_code == 200 and "Access-Control-Allow-Origin" not in reply.headers
    friend = "http://localhost:3000"
    with search_index.server(port=0, cors_origins=(friend,)) as open_to_one:
        url = f"{open_to_one.url}/indices-list"
        ok = requests.get(url, headers={"Origin": friend}, timeout=10)
        assert ok.headers.get("Access-Control-Allow-Origin") == friend
        other = requests.get(url, headers=evil, timeout=10)
        assert "Access-Control-Allow-Origin" not in other.headers
    with pytest.raises(ValueError, match="scheme://host"):
        search_index.server(port=0, cors_origins=("localhost:3000/app",))


def test_request_bodies_are_capped(search_index):
    limits = ServiceLimits(max_body_bytes=100_000)
    with search_index.server(port=0, limits=limits, log_requests=False) as small:
        start = time.monotonic()
        reply = _post(small, **QUERY, text="word " * 100_000)  # 500 kB
        assert reply.status_code == 413 and time.monotonic() - start < 10


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**QUERY, "modality": "video", "text": "a"}, "modality"),
        ({"num_images": 3, "indice_name": "brivl", "text": "a"}, "modality"),
        ({**QUERY, "indice_name": "nope", "text": "a"}, "indice_name"),
        ({**QUERY, "num_images": 0, "text": "a"}, "num_images"),
        ({**QUERY, "num_images": "5", "text": "a"}, "num_images"),
        ({**QUERY, "num_images": 10**6, "text": "a"}, "num_images"),
        ({"modality": "image", "indice_name": "brivl", "text": "a"}, "num_images"),
        ({**QUERY}, "query"),
        ({**QUERY, "text": "a", "image": _png()}, "query"),
        ({**QUERY, "text": "x" * 2001}, "text"),
        ({**QUERY, "text": 5}, "text"),
        ({**QUERY, "image": "not base64!"}, "image"),
        ({**QUERY, "image": base64.b64encode(b"<html>").decode()}, "image"),
        ({**QUERY, "embedding_input": [0.1, 0.2]}, "embedding_input"),
        ({**QUERY, "embedding_input": "0.1"}, "embedding_input"),
        ({**QUERY, "text": "a", "use_safety_model": "on"}, "use_safety_model"),
        ({**QUERY, "text": "a", "aesthetic_score": "9"}, "aesthetic_score"),
        ({**QUERY, "text": "a", "num_result_ids": 10_001}, "num_result_ids"),
        ({**QUERY, "text": "a", "deduplicate": "yes"}, "deduplicate"),
        (["not", "an", "object"], "body"),
    ],
)
def test_bad_knn_requests_are_400_naming_the_field(server, body, field):
    reply = requests.post(f"{server.url}/knn-service", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": [0], "indice_name": "nope"}, "indice_name"),
        ({"ids": "0", "indice_name": "brivl"}, "ids"),
        ({"ids": [-1], "indice_name": "brivl"}, "ids"),
        ({"ids": [10_000], "indice_name": "brivl"}, "ids"),
    ],
)
def test_bad_metadata_requests_are_400_naming_the_field(server, body, field):
    reply = _post(server, "/metadata", **body)
    assert reply.status_code == 400 and reply.json()["message"].startswith(f"{field}:")


def test_malformed_json_is_a_400(server):
    reply = requests.post(f"{server.url}/knn-service", data=b"{not json", timeout=10)
    assert reply.status_code == 400


def test_the_bundled_web_uis_request_is_answered(server):
    """clip-retrieval's front sends its defaults on every search: 3,000 result ids, safe mode
    and violence removal on, an empty aesthetic score with weight "0.5". The service answers,
    and says which flags it could not apply (no safety model or violence detector loaded)."""
    body = {"text": "a red circle", "image": None, "image_url": None, "embedding_input": None,
            "modality": "image", "num_images": 40, "indice_name": "brivl",
            "num_result_ids": 3000, "use_mclip": False, "deduplicate": True,
            "use_safety_model": True, "use_violence_detector": True, "aesthetic_score": "",
            "aesthetic_weight": "0.5"}
    reply = requests.post(f"{server.url}/knn-service", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json(), "no results"
    assert reply.headers["X-Brivl-Not-Applied"] == "use_safety_model, use_violence_detector"
    plain = requests.post(f"{server.url}/knn-service", json={**QUERY, "text": "a"}, timeout=30)
    assert plain.status_code == 200 and "X-Brivl-Not-Applied" not in plain.headers
