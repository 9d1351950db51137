"""Resampled shards on the Ray path: each epoch's files are drawn with replacement and read in
groups without a repeated file (Ray's reader drops a file listed twice in one read)."""

from __future__ import annotations

from types import SimpleNamespace

from tasks.pretrain_ray import _epochs_dataset, _without_repeats


class _Reads(list):
    def union(self, *others):
        return _Reads(self + [f for o in others for f in o])


def test_resampled_epochs_draw_files_with_replacement_in_reads_without_repeats() -> None:
    assert _without_repeats(["a", "b", "a", "c", "c"]) == [["a", "b"], ["a", "c"], ["c"]]
    files = [f"part-{i}" for i in range(20)]
    cfg = SimpleNamespace(seed=0, shuffle=True, resampled=True, workers=1,
                          total_steps=lambda n, w: 10, global_batch=lambda w: 20)
    reads: list[list[str]] = []
    stream = _epochs_dataset(files, cfg, 100, lambda some: reads.append(some) or _Reads(some))
    assert all(len(set(r)) == len(r) for r in reads)  # no read lists a file twice
    assert len(stream) == 20 * (200 // 100 + 2) and len(set(stream[:20])) < 20  # repeats
    plain = SimpleNamespace(**{**vars(cfg), "resampled": False})
    assert sorted(_epochs_dataset(files, plain, 100, _Reads)[:20]) == sorted(files)
