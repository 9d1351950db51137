"""The registered model's MLflow pyfunc, logged as code (MLflow "models from code").

Input: a DataFrame with a ``text`` (string) and/or ``image`` (encoded image bytes) column.
Output: ``text_embedding`` / ``image_embedding`` columns (lists of float32, L2-normalised)
for the input columns present; a row whose input is missing gets ``None``. The checkpoint
directory is the model's ``checkpoint`` artifact; loading needs the brivl package.
"""

from __future__ import annotations

import warnings

import mlflow
from mlflow.pyfunc import PythonModel

CHECKPOINT_ARTIFACT = "checkpoint"
TYPE_HINT_NOTICE = "Add type hints to the `predict` method"
_show_warning = warnings.showwarning


def _without_type_hint_notice(message, *args, **kwargs):
    """MLflow warns, whenever a PythonModel without type hints is defined (on every load; it
    resets warning filters while doing so), that it cannot validate the input: predict()
    checks its input itself, so that notice is dropped while the class below is defined."""
    if TYPE_HINT_NOTICE not in str(message):
        _show_warning(message, *args, **kwargs)


warnings.showwarning = _without_type_hint_notice


class BrivlEmbeddingModel(PythonModel):
    """Rows of text and/or image bytes -> embedding columns (see the module doc)."""

    def load_context(self, context):
        from brivl.inference import load

        self.encoder = load(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        present = [c for c in ("text", "image") if c in frame.columns]
        if not present:
            raise ValueError(
                f"input columns {list(frame.columns)}: need a 'text' (string) and/or "
                "'image' (encoded image bytes) column"
            )
        batch_size = int((params or {}).get("batch_size", 64))
        out = pd.DataFrame(index=frame.index)
        for column in present:
            values = frame[column]
            mask = values.notna().to_numpy()
            items = values[mask].tolist()
            if column == "text":
                emb = self.encoder.encode_texts([str(t) for t in items], batch_size=batch_size)
            else:
                emb = self.encoder.encode_images(items, batch_size=batch_size)
            cells = [None] * len(frame)
            for row, vec in zip(mask.nonzero()[0], emb, strict=True):
                cells[row] = vec.tolist()
            out[f"{column}_embedding"] = cells
        return out


warnings.showwarning = _show_warning
mlflow.models.set_model(BrivlEmbeddingModel())
