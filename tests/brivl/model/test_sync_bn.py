"""SyncBN (brivl.model.sync_bn): two gloo workers with half a batch each normalise, and get
the gradients, of one process with BatchNorm over the whole batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from brivl.model.sync_bn import GlobalBatchNorm2d, convert_global_batchnorm

ROOT = Path(__file__).resolve().parents[3]

NET = """
import torch
from torch import nn
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                         nn.BatchNorm2d(4, momentum=None))
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 6, 6, generator=g), torch.randn(8, 4, 4, 4, generator=g)
"""

WORKER = NET + """
import sys
import torch.distributed as dist
from safetensors.torch import save_file
from brivl.model.sync_bn import convert_global_batchnorm
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
model = net()
assert convert_global_batchnorm(model) == 2
x, w = data()
part = slice(4 * rank, 4 * rank + 4)
for _ in range(2):  # twice: the running statistics move twice
    y = model(x[part])
    loss = (y * w[part]).mean()
    model.zero_grad()
    loss.backward()
result = {"y": y.detach().contiguous()}
for name, p in model.named_parameters():
    dist.all_reduce(p.grad)
    result["grad." + name] = p.grad / 2
result.update({"state." + k: v for k, v in model.state_dict().items()})
if rank == 0:
    save_file(result, out)
dist.destroy_process_group()
"""


def _net_and_data():
    scope: dict = {}
    exec(NET, scope)  # noqa: S102 - the same definitions the workers run
    return scope["net"](), scope["data"]()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_with_sync_bn_equal_one_worker_on_the_global_batch(tmp_path: Path) -> None:
    port, out = _free_port(), tmp_path / "rank0.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(port), str(out)],
                              env=env, cwd=ROOT, stderr=subprocess.PIPE) for r in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    got = load_file(str(out))

    model, (x, w) = _net_and_data()  # plain BatchNorm, the whole batch in one process
    for _ in range(2):
        y = model(x)
        loss = (y * w).mean()
        model.zero_grad()
        loss.backward()
    torch.testing.assert_close(got["y"], y.detach()[:4], atol=1e-5, rtol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[f"grad.{name}"], p.grad, atol=1e-5, rtol=1e-5, msg=name)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got[f"state.{name}"], value, atol=1e-5, rtol=1e-5, msg=name)


def test_without_a_process_group_it_is_plain_batchnorm_and_keeps_its_tensors() -> None:
    model, (x, _) = _net_and_data()
    reference, _ = _net_and_data()
    weight = model[1].weight
    assert convert_global_batchnorm(model) == 2
    assert type(model[1]) is GlobalBatchNorm2d and isinstance(model[1], nn.BatchNorm2d)
    assert model[1].weight is weight  # an optimizer built before stays valid
    assert torch.equal(model(x), reference(x))
    assert model.state_dict().keys() == reference.state_dict().keys()
