"""The BriVL model: towers, multi-scale patch pooling, momentum encoders and queues.

>>> from brivl.model import create_model, list_models
>>> from brivl.model.tokenizer import train_tokenizer
>>> model = create_model("brivl-tiny", tokenizer=train_tokenizer(captions))
>>> out = model(pixels, **model.tokenize(texts), momentum=0.99)  # dict(loss, ...)
"""

from brivl.model.checkpoint import (
    is_checkpoint,
    load_checkpoint,
    load_checkpoint_extras,
    save_checkpoint,
)
from brivl.model.config import (
    BriVLConfig,
    ConfigError,
    ImageTowerConfig,
    TextTowerConfig,
    list_models,
)
from brivl.model.factory import build_config, create_model
from brivl.model.model import BriVL, info_nce

__all__ = [
    "BriVL",
    "BriVLConfig",
    "ConfigError",
    "ImageTowerConfig",
    "TextTowerConfig",
    "build_config",
    "create_model",
    "info_nce",
    "is_checkpoint",
    "list_models",
    "load_checkpoint",
    "load_checkpoint_extras",
    "save_checkpoint",
]
