"""Two gloo workers on 127.0.0.1 compute the loss and gradients of one worker on the global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from brivl.model import load_checkpoint, save_checkpoint

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process(
    ckpt: Path, data: dict[str, torch.Tensor], in_batch: bool
) -> dict[str, torch.Tensor]:
    model = load_checkpoint(ckpt)
    model.config.in_batch_negatives = in_batch
    out = model(data["pixels"], data["input_ids"], data["attention_mask"], momentum=0.9)
    out["loss"].backward()
    result = {k: out[k].detach() for k in ("loss", "loss_i2t", "loss_t2i")}
    result.update({f"grad.{n}": p.grad for n, p in model.named_parameters() if p.grad is not None})
    result.update(
        {f"state.{k}": v for k, v in model.state_dict().items() if "queue" in k or "_m." in k}
    )
    return result


def test_two_workers_equal_one_on_the_global_batch(tiny, tmp_path):
    model = tiny(queue_size=24)
    warm = model.tokenize([f"warm {i}" for i in range(8)])
    model(torch.rand(8, 3, 32, 32), **warm)  # a third of the queue holds real keys
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    torch.manual_seed(3)
    batch = model.tokenize(
        [
            f"a {c} cat number {i}"
            for i, c in enumerate("red blue green pink gray gold tan sky".split())
        ]
    )
    data = {"pixels": torch.rand(8, 3, 32, 32), **batch}
    save_file(data, str(tmp_path / "data.safetensors"))

    port, out = free_port(), tmp_path / "rank0.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--rank",
                str(r),
                "--world",
                "2",
                "--port",
                str(port),
                "--ckpt",
                str(ckpt),
                "--data",
                str(tmp_path / "data.safetensors"),
                "--out",
                str(out),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    got = load_file(str(out))

    for variant, in_batch in (("plain", False), ("inbatch", True)):
        want = single_process(ckpt, data, in_batch)
        assert float(want["loss"]) > 0.5  # a real loss, not the empty-queue zero
        for key, value in want.items():
            other = got[f"{variant}.{key}"]
            assert torch.allclose(other, value, rtol=1e-5, atol=1e-6), (
                variant,
                key,
                (other - value).abs().max(),
            )
        grads = [k for k in want if k.startswith("grad.")]
        assert len(grads) == len([k for k in got if k.startswith(f"{variant}.grad.")]) > 10
        # the queue received all 8 keys of the global batch, in rank order
        assert int(got[f"{variant}.state.image_queue_ptr"]) == 16
