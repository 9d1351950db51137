"""Stage milestones and progress reach the Prefect run log (the Prefect UI's Logs tab)."""

from __future__ import annotations

import logging
import uuid

from prefect import flow, task
from prefect.logging.handlers import APILogWorker

from brivl.report import progress
from tasks.stage import Stage, StageOutput, StageRun


def _probe_stage() -> Stage:
    return Stage("probe", ("tasks.stage",), lambda p: {"n": p["n"]},
                 inputs=lambda p: [p["token"]])


def _produce(run: StageRun) -> StageOutput:
    (run.out_dir / "rows.txt").write_text("x\n" * 8)
    with progress("probe rows", total=8) as advance:
        for _ in range(8):
            advance()
    return StageOutput({"rows": 8})


def test_stage_milestones_and_progress_quarters_are_in_the_run_log(tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    stage = _probe_stage()
    token = uuid.uuid4().hex

    @task(**stage.task_options())
    def probe_task(n: int) -> str:
        run = stage.run(_produce, {"n": n, "token": token, "out_dir": str(tmp_path / "out")})
        return str(run.out_dir)

    @flow
    def probe_flow() -> str:
        probe_task(8)
        return probe_task(8)  # the second call finds the stage done

    state = probe_flow(return_state=True)
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    text = "\n".join(f"{logging.getLevelName(log.level)} {log.message}" for log in logs)
    assert "INFO probe: started (key " in text, text
    assert "INFO probe rows: started, 8 to do" in text
    assert "INFO probe rows: 2/8" in text and "INFO probe rows: 6/8" in text
    assert "probe rows: 8/8 in " in text
    assert "INFO probe: done in " in text and f"rows 8; output {tmp_path / 'out'}" in text
    assert "INFO probe: reused its finished output; rows 8" in text
