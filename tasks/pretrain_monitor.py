"""Pretrain progress: a terminal bar with loss and samples/s, and the MLflow training curves."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from brivl.report import progress


class Monitor:
    """Shows a progress bar and logs each reported step to MLflow (when a run is active).

    Local training calls :meth:`on_metrics` directly; with ``follow`` (Ray Train) a thread
    reads the ``metrics.jsonl`` that rank 0 appends to.
    """

    def __init__(self, checkpoints: Path, total: int | None, follow: bool) -> None:
        self.log = checkpoints / "metrics.jsonl"
        self.total, self.follow = total, follow
        self.done_step = 0
        self.run_id = _mlflow_run_id()
        self.stop = threading.Event()
        self.offset = self.log.stat().st_size if self.log.is_file() else 0

    def __enter__(self) -> Monitor:
        self.bar = progress("pretrain", self.total)
        self.advance = self.bar.__enter__()
        self.thread = threading.Thread(target=self._follow, daemon=True, name="pretrain-monitor")
        if self.follow:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.follow:
            self.stop.set()
            self.thread.join(timeout=5)
            self._read_new()
        self.bar.__exit__(*exc)

    def on_metrics(self, metrics: dict[str, Any]) -> None:
        """One reported step: advance the bar, log to MLflow (each step once)."""
        step = int(metrics["step"])
        if step <= self.done_step:
            return  # a resumed run repeats steps the killed one had reported
        label = "pretrain"
        if isinstance(metrics.get("loss"), (int, float)):
            label += f": loss {metrics['loss']:.3f}"
        if isinstance(metrics.get("samples_per_s"), (int, float)):
            label += f", {metrics['samples_per_s']:.0f} samples/s"
        self.advance(step - self.done_step, description=label)
        self.done_step = step
        if self.run_id is not None:
            import mlflow

            values = {f"train/{k}": float(v) for k, v in metrics.items()
                      if k != "step" and isinstance(v, (int, float))}
            mlflow.log_metrics(values, step=step, run_id=self.run_id)

    def _follow(self) -> None:
        while not self.stop.wait(1.0):
            self._read_new()

    def _read_new(self) -> None:
        if not self.log.is_file():
            return
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a half-written last line waits
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                self.on_metrics(json.loads(line))


def _mlflow_run_id() -> str | None:
    try:
        import mlflow
    except ImportError:  # pragma: no cover - project dependency
        return None
    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


