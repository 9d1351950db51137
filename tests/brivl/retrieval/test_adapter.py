"""clip-retrieval's clip_back imported without its package __init__, driven by our encoder."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from brivl.compat.clip_retrieval import all_clip_shim, clip_back, clip_retrieval_module
from brivl.retrieval.adapter import ClipAdapter, PendingInputs, preprocess, tokenize


def test_clip_back_imports_without_the_package_init() -> None:
    cb = clip_back()
    assert cb.__name__ == "clip_retrieval.clip_back"
    assert cb.__file__.endswith("clip_retrieval/clip_back.py")
    package = sys.modules["clip_retrieval"]
    assert getattr(package, "__brivl_init_skipped__", False)
    assert "clip_retrieval.clip_inference" not in sys.modules  # the part that needs all_clip
    assert clip_retrieval_module("clip_index").clip_index  # the index builder loads too
    for name in ("KnnService", "MetadataService", "load_clip_index", "ClipResource", "ClipOptions"):
        assert hasattr(cb, name)


def test_all_clip_shim_is_scoped() -> None:
    before = sys.modules.get("all_clip")

    def fake_load_clip(*args, **kwargs):
        return "model", "preprocess", "tokenizer"

    with all_clip_shim(fake_load_clip):
        from all_clip import load_clip

        assert load_clip("any") == ("model", "preprocess", "tokenizer")
    assert sys.modules.get("all_clip") is before


def _resource(encoder):
    cb = clip_back()
    model, prep, tok = ClipAdapter(encoder).load_clip("brivl")
    fields = dict.fromkeys(f for f in cb.ClipResource.__dataclass_fields__)
    fields.update(device="cpu", model=model, preprocess=prep, tokenizer=tok, columns_to_return=[])
    fields.update(metadata_is_ordered_by_ivf=False)
    return cb.ClipResource(**fields)


def _query(resource, **inputs):
    service = clip_back().KnnService(clip_resources={"x": resource})
    args = dict(text_input=None, image_input=None, image_url_input=None, embedding_input=None)
    args.update(inputs)
    return service.compute_query(
        clip_resource=resource, use_mclip=False, aesthetic_score=None, aesthetic_weight=None, **args
    )


def test_clip_back_text_query_is_our_text_embedding(encoder) -> None:
    query = _query(_resource(encoder), text_input="a red circle picture")
    assert query.shape == (1, encoder.dim) and query.dtype == np.float32
    np.testing.assert_allclose(query, encoder.encode_texts(["a red circle picture"]), atol=1e-6)


def test_clip_back_image_query_is_our_image_embedding(encoder, corpus) -> None:
    import base64

    jpeg = corpus.drawn_jpeg("blue", "square", 3)
    query = _query(_resource(encoder), image_input=base64.b64encode(jpeg).decode())
    np.testing.assert_allclose(query, encoder.encode_images([jpeg]), atol=1e-6)


def test_adapter_inputs_are_checked(encoder) -> None:
    with pytest.raises(TypeError, match="not an encoder"):
        ClipAdapter(object())
    model = ClipAdapter(encoder).model
    image = Image.new("RGB", (8, 8))
    with pytest.raises(TypeError, match="encode_text expects"):
        model.encode_text(preprocess(image))
    with pytest.raises(TypeError, match="encode_image expects"):
        model.encode_image(tokenize(["a"]))
    with pytest.raises(TypeError, match="strings"):
        tokenize([1])
    pending = tokenize("one")
    assert isinstance(pending, PendingInputs) and pending.to("cpu").unsqueeze(0).items == ["one"]
    assert preprocess(Image.new("L", (4, 4))).items[0].mode == "RGB"
