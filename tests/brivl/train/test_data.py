from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brivl.train import ShardBatches, prefetch, read_split


def test_skipping_to_batch_n_equals_iterating_to_it(toy_shards: Path) -> None:
    batches = ShardBatches(toy_shards, batch_size=16, image_size=32, seed=5)
    assert batches.per_epoch == 6 and batches.samples_per_epoch == 96
    run = batches(0)
    straight = [next(run) for _ in range(9)]  # crosses into the second epoch
    resumed = batches(7)
    for expected in straight[7:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["pixels"], expected["pixels"])
        assert list(got["key"]) == list(expected["key"])
    assert straight[6]["epoch"][0] == 1 and list(straight[0]["key"]) != list(straight[6]["key"][:16])


def test_each_worker_gets_its_own_rows_and_every_epoch_is_a_new_order(toy_shards: Path) -> None:
    workers = [ShardBatches(toy_shards, batch_size=8, image_size=32, rank=r, world_size=2)
               for r in range(2)]
    epoch0 = [set(np.concatenate([w.indices(b) for b in range(w.per_epoch)])) for w in workers]
    assert not epoch0[0] & epoch0[1] and len(epoch0[0] | epoch0[1]) == 96
    assert not np.array_equal(workers[0].indices(0), workers[0].indices(workers[0].per_epoch))


def test_a_missing_split_or_column_is_a_clear_error(tmp_path: Path, toy_shards: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no train/\\*.parquet files"):
        ShardBatches(tmp_path, batch_size=4, image_size=32)
    with pytest.raises(ValueError, match="missing column"):
        read_split(toy_shards, "val", ["caption", "nope"])
    with pytest.raises(ValueError, match="cannot fill one batch"):
        ShardBatches(toy_shards, batch_size=64, image_size=32, world_size=2)


def test_prefetch_keeps_order_and_reraises_producer_errors() -> None:
    assert list(prefetch(iter(range(10)), depth=3)) == list(range(10))

    def broken():
        yield 1
        raise RuntimeError("decoder died")

    got = prefetch(broken(), depth=2)
    assert next(got) == 1
    with pytest.raises(RuntimeError, match="decoder died"):
        next(got)
