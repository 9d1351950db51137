"""BriVL: the library (data logic, model, training, evaluation, interpretation).

Imports torch/numpy/pyarrow and friends, never Prefect, MLflow or Ray.
"""

__version__ = "0.1.0"
