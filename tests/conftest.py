"""Test session setup: an isolated project home, set before Prefect/MLflow/Ray are imported."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="brivl-test-")
for _key in (
    "PREFECT_HOME",
    "PREFECT_LOCAL_STORAGE_PATH",
    "PREFECT_API_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACTS_DESTINATION",
    "RAY_TMPDIR",
    "RAY_ADDRESS",
    "HF_HOME",
):
    os.environ.pop(_key, None)
os.environ["BRIVL_HOME"] = _HOME

from brivl.env import apply_defaults  # noqa: E402

apply_defaults()
