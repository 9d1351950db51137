"""bench/gpu.py --cpu-smoke: the GPU benchmark's own code path (the trainer's step, FLOP
counting, the batch sweep, the table) runs on the CPU in CI time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_bench_cpu_smoke_prints_its_table_within_a_minute(tmp_path: Path) -> None:
    env = dict(os.environ, BRIVL_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--cpu-smoke", "--out",
                           str(tmp_path / "rows.jsonl")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert wall < 60, f"--cpu-smoke took {wall:.0f} s"
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "model", "image px", "precision", "compile", "batch", "step ms", "samples/s",
        "peak mem GiB", "GFLOP/sample", "TFLOP/s", "MFU"]
    rows = [line for line in lines if line.startswith("| brivl-tiny |")]
    assert {r.split("|")[3].strip() for r in rows} == {"bf16", "fp32"} and len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[5]) > 0 and float(cells[6]) > 0 and float(cells[8]) > 0  # ms, /s, FLOPs
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 4
