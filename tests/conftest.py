"""Test session setup: an isolated project home, set before Prefect/MLflow/Ray are imported."""

from __future__ import annotations

import os
import tempfile

from brivl.env import HOME_BOUND_KEYS, apply_defaults  # imports neither Prefect, MLflow nor Ray

_HOME = tempfile.mkdtemp(prefix="brivl-test-")
for _key in HOME_BOUND_KEYS:
    os.environ.pop(_key, None)
os.environ["BRIVL_HOME"] = _HOME
apply_defaults()
