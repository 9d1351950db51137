"""The stage contract (tasks/stage.py): normalised configs, safe output directories, done
means this stage with this key, and a second writer waits for the first (issue 15 item 1,
issue 16 items 6 and 8)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from brivl import manifest
from tasks.stage import Stage, StageDirError, StageOutput, StageRun


def _jpeg(i: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 80), (40 * i % 255, 90, 160)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished download stage of four image-text pairs."""
    folder = tmp_path_factory.mktemp("download")
    rows = [{"key": f"{i:09d}", "candidate_id": f"c{i}", "url": f"http://x.test/{i}.jpg",
             "caption": f"a blue picture number {i} of the garden", "status": "success",
             "error_message": None, "width": 96, "height": 80, "jpg": _jpeg(i)}
            for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    manifest.write_manifest(folder, stage="download", config={}, inputs=["seed"],
                            code_version="test", row_counts={"success": 4})
    return folder


def test_filter_refuses_a_directory_that_is_not_its_own_and_deletes_nothing(
    download_dir: Path, tmp_path: Path
) -> None:
    """Issue 16 item 6: ``brivl filter --out DIR`` deleted DIR/kept and DIR/rejected."""
    from tasks.filter import filter_task

    mine = tmp_path / "mine"
    for sub in ("kept", "rejected"):
        (mine / sub).mkdir(parents=True)
        (mine / sub / "notes.txt").write_text("the user's own file")
    with pytest.raises(StageDirError, match=r"mine: it is not empty \(kept, rejected\)"):
        filter_task.fn(str(download_dir), {}, out_dir=str(mine))
    assert sorted(p.name for p in mine.rglob("*")) == ["kept", "notes.txt", "notes.txt",
                                                       "rejected"]


def test_another_stages_output_is_not_filter_done_and_is_left_alone(download_dir: Path) -> None:
    """Issue 16 item 6: ``--out X`` with X a download stage took its manifest as done."""
    from tasks.filter import filter_task, resolve_filter

    before = {p: p.stat().st_mtime_ns for p in download_dir.rglob("*")}
    assert not resolve_filter(str(download_dir), {}, str(download_dir)).done
    with pytest.raises(StageDirError, match="holds a 'download' stage output"):
        filter_task.fn(str(download_dir), {}, out_dir=str(download_dir))
    assert {p: p.stat().st_mtime_ns for p in download_dir.rglob("*")} == before


def test_done_means_this_stage_with_this_key(download_dir: Path, tmp_path: Path) -> None:
    from brivl.filter import FilterConfig
    from tasks.filter import filter_task, resolve_filter

    out = tmp_path / "filtered"
    assert filter_task.fn(str(download_dir), {}, out_dir=str(out)) == str(out.resolve())
    spelled_out = FilterConfig().to_dict()
    assert resolve_filter(str(download_dir), spelled_out, str(out)).done  # {} == the defaults
    other = {"min_image_side": 90}
    assert not resolve_filter(str(download_dir), other, str(out)).done  # same stage, other key
    filter_task.fn(str(download_dir), other, out_dir=str(out))  # its own stage: rewritten
    body = manifest.read_manifest(out)
    assert body["config"]["min_image_side"] == 90 and body["row_counts"]["rejected"] == 4
    assert manifest.manifest_key(body) == resolve_filter(str(download_dir), other, str(out)).key


def _every_stage() -> dict[str, tuple[Stage, dict]]:
    from tasks.crawl import CRAWL
    from tasks.download import DOWNLOAD
    from tasks.evaluate import EVALUATE
    from tasks.filter import FILTER
    from tasks.index import INDEX
    from tasks.interpret import GENERATOR, GRID
    from tasks.pretrain import PRETRAIN
    from tasks.register import REGISTER
    from tasks.shard import SHARD

    stages = (CRAWL, DOWNLOAD, FILTER, SHARD, PRETRAIN, EVALUATE, REGISTER, INDEX, GENERATOR,
              GRID)
    return {s.name: s for s in stages}


def test_every_stage_normalises_its_config_once(tmp_path: Path) -> None:
    """``{}`` and the spelled-out defaults are one config (hence one key) for all ten."""
    from brivl.train.toydata import make_toy_shards

    shards = make_toy_shards(tmp_path / "shards", n_train=8, n_val=0, side=16)
    stages = _every_stage()
    assert len(stages) == 10
    extra = {"pretrain": {"shard_dir": str(shards)}, "grid": {"prompts": ["a red apple"]}}
    for name, stage in stages.items():
        params = extra.get(name, {})
        default = stage.normalise({**params, "config": {}})
        assert default and stage.normalise({**params, "config": None}) == default, name
        if name == "grid":  # the algorithms' configs and the cell size; the prompts are apart
            spelled = {**params, "config": {k: default[k] for k in ("visualize", "generate",
                                                                  "cell")}}
        elif name == "register":  # its settings are task parameters
            spelled = dict(default)
        else:
            spelled = {**params, "config": default}
        assert stage.normalise(spelled) == default, name


def _probe_stage(calls: list[str]) -> tuple[Stage, callable]:
    stage = Stage("probe", ("brivl.manifest",), lambda p: {"n": p.get("config") or 0},
                  inputs=lambda p: [p["value"]])

    def produce(run: StageRun) -> StageOutput:
        calls.append(threading.current_thread().name)
        time.sleep(1.0)  # the other writer arrives meanwhile
        (run.out_dir / "value.txt").write_text("done")
        return StageOutput({"values": 1})

    return stage, produce


def test_a_second_writer_waits_then_reuses_the_result(tmp_path: Path, capfd) -> None:
    """Issue 16 item 8: two writers of one stage directory; the second waits for the lock,
    then finds the stage done and does no work."""
    calls: list[str] = []
    stage, produce = _probe_stage(calls)
    params = {"value": "v", "config": 1, "out_dir": str(tmp_path / "out")}
    results: dict[str, StageRun] = {}

    def writer(name: str) -> None:
        results[name] = stage.run(produce, params)

    threads = [threading.Thread(target=writer, args=(n,), name=n) for n in ("first", "second")]
    threads[0].start()
    time.sleep(0.3)
    threads[1].start()
    for t in threads:
        t.join(timeout=60)
    assert calls == ["first"]
    assert results["first"].out_dir == results["second"].out_dir
    assert manifest.verify(tmp_path / "out")["row_counts"] == {"values": 1}
    assert "waiting for the probe output" in capfd.readouterr().err
