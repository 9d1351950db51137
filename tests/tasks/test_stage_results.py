"""Issue 16: Prefect's cached stage results are plain JSON; a tampered record is a cache
miss, never code execution (real Prefect, a real cached stage task)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from prefect import task
from prefect.serializers import PickleSerializer

from brivl import manifest
from tasks.prefect_cache import STAGE_SERIALIZER, record_path
from tasks.stage import resolve_stage, stage_cache_key

CODE = ["brivl.manifest"]
probe_key = stage_cache_key("probe", CODE, ["value"])
bodies: list[str] = []


@task(cache_key_fn=probe_key, persist_result=True)
def probe_task(value: str, config: dict, out_dir: str | None = None) -> dict:
    """A stage task shaped like the real ones: idempotent body, small JSON result."""
    bodies.append(value)
    run = resolve_stage("probe", CODE, [value], config, out_dir)
    if not run.done:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "value.txt").write_text(value)
        manifest.write_manifest(
            run.out_dir, stage="probe", config=config, inputs=[value],
            code_version=run.code_version, row_counts={"values": 1},
        )
    return {"out_dir": str(run.out_dir), "score": 0.5}


class Touch:
    """Unpickling this creates ``path``: the stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _run(value: str):
    state = probe_task(value, {}, return_state=True)
    return state.name, state.result()


def test_a_tampered_cache_record_is_a_miss_and_never_unpickled(tmp_path):
    value = f"probe-{uuid.uuid4()}"
    name, result = _run(value)
    assert name == "Completed" and result["score"] == 0.5
    record_file = record_path(probe_key(None, {"value": value, "config": {}}))
    record = json.loads(record_file.read_bytes())
    assert record["metadata"]["serializer"] == STAGE_SERIALIZER.model_dump(mode="json")
    assert json.loads(record["result"]) == result  # plain JSON, no pickle
    assert _run(value) == ("Cached", result) and bodies.count(value) == 1

    # rewrite the record as Prefect's own pickle serializer would have written it
    marker = tmp_path / "code-ran"
    pickled = PickleSerializer()
    record["metadata"]["serializer"] = pickled.model_dump(mode="json")
    record["result"] = pickled.dumps(Touch(marker)).decode()
    record_file.write_text(json.dumps(record))
    assert _run(value) == ("Completed", result)  # recomputed: a cache miss
    assert not marker.exists() and bodies.count(value) == 2
    assert json.loads(record_file.read_bytes())["metadata"]["serializer"]["type"] == "json"

    record_file.write_bytes(b"\x80\x04 not a record at all")  # unreadable: a miss too
    assert _run(value) == ("Completed", result) and bodies.count(value) == 3
    assert _run(value) == ("Cached", result)
