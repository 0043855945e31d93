"""Step 1 under DistributedDataParallel: two local processes (gloo backend)
train a tsq.torch-prepared model, each on its own shard; afterwards every
parameter and quantizer buffer (eps, delta, bits) is the same on both ranks,
and a step happened (batch-norm running statistics aside, which DDP
broadcasts before each forward). Run by test_torch_api.py; prints "ddp ok" on success."""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_cases import SmallCNN, data  # noqa: E402
import tsq.torch as tt                  # noqa: E402


def worker(rank, world, port, out):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    x, y = data(128)
    model = tt.prepare(SmallCNN(), [x[:64], x[64:]], progress=False)   # same on both ranks
    before = [p.detach().clone() for p in model.parameters()]
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), 0.05, momentum=0.9)
    shard = slice(rank * 64, (rank + 1) * 64)                          # different data
    for _ in range(3):
        loss = F.cross_entropy(ddp(x[shard]), y[shard])
        opt.zero_grad()
        loss.backward()
        opt.step()
    # parameters and the quantizers' buffers (batch-norm running statistics
    # are per rank between DDP's broadcasts)
    kept = [t for k, t in model.state_dict().items() if "running" not in k
            and "num_batches" not in k]
    state = torch.cat([t.detach().float().reshape(-1) for t in kept])
    gathered = [torch.zeros_like(state) for _ in range(world)]
    dist.all_gather(gathered, state)
    moved = any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    if rank == 0:
        out.put((all(torch.equal(g, gathered[0]) for g in gathered), moved,
                 len(tt.quant_modules(model))))
    dist.destroy_process_group()


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(worker, args=(2, port, out), nprocs=2, start_method="spawn")
    same, moved, nquant = out.get()
    print("ranks agree: %s, parameters moved: %s, quantizers: %d" % (same, moved, nquant))
    if same and moved and nquant == 3:
        print("ddp ok")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
