"""Milestones into the Prefect run log, so the Prefect UI's Logs tab follows the stages.

:func:`to_run_log` is a :func:`brivl.report.add_milestone_sink` sink: inside a flow or task
run (on its thread) it writes the message to that run's log; elsewhere it does nothing (the
terminal already has the progress bars).
"""

from __future__ import annotations

import logging

from brivl import report


def to_run_log(message: str) -> None:
    """``message`` at INFO in the current Prefect run's log, if there is one."""
    from prefect.context import FlowRunContext, TaskRunContext

    task_run = TaskRunContext.get()
    if task_run is not None and task_run.task_run.flow_run_id is None:
        return  # a task called outside any flow: its log has nowhere to go
    if task_run is None and FlowRunContext.get() is None:
        return
    from prefect import get_run_logger

    get_run_logger().log(logging.INFO, message)


report.add_milestone_sink(to_run_log)
