"""Pretraining: config, schedules, augmentation, resumable batches, checkpoints, the loop.

>>> from brivl.train import TrainConfig, ShardBatches, train
>>> cfg = TrainConfig(model="brivl-tiny", steps=100, batch_size=32)
>>> result = train(cfg, ShardBatches(shards, batch_size=32, image_size=96), print,
...                checkpoint_dir="runs/x", captions=read_captions(shards))
"""

from brivl.train.augment import decode_augment_batch, random_resized_crop_box
from brivl.train.config import PretrainConfig, TrainAugmentConfig, TrainConfig
from brivl.train.data import ShardBatches, prefetch, read_captions, read_split, shard_files
from brivl.train.loop import (
    build_model,
    make_optimizer,
    needs_tokenizer,
    prepare_initial_checkpoint,
    read_metrics_log,
    train,
)
from brivl.train.schedule import lr_at, momentum_at
from brivl.train.state import (
    latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    read_trainer_state,
    save_training_checkpoint,
)
from brivl.train.validate import retrieval_metrics

__all__ = [
    "PretrainConfig",
    "ShardBatches",
    "TrainAugmentConfig",
    "TrainConfig",
    "build_model",
    "decode_augment_batch",
    "latest_checkpoint",
    "list_checkpoints",
    "load_training_checkpoint",
    "lr_at",
    "make_optimizer",
    "momentum_at",
    "needs_tokenizer",
    "prefetch",
    "prepare_initial_checkpoint",
    "random_resized_crop_box",
    "read_captions",
    "read_metrics_log",
    "read_split",
    "read_trainer_state",
    "retrieval_metrics",
    "save_training_checkpoint",
    "shard_files",
    "train",
]
