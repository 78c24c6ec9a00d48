"""Run by tests/engine/test_distributed.py, alone or under torchrun: trains a tiny regression with the shared
loop and writes the final weights (rank 0) to argv[1]. argv[2] is grad_accum."""

import sys

import torch

from concept_eraser.engine.training import TrainSettings, train
from concept_eraser.spec.runloop import JobContext


def main() -> None:
    torch.set_num_threads(1)
    out, accum = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 8))
    b = torch.nn.Parameter(torch.zeros(4))
    true_w = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))

    def loss_fn(step: int, gen: torch.Generator):
        x = torch.randn(16, 8, generator=gen)  # the draws differ per (step, micro-step, process)
        loss = ((x @ w.T + b - x @ true_w.T) ** 2).mean()
        return loss, {"loss": float(loss)}

    settings = TrainSettings(steps=6, lr=0.05, optimizer="adam", grad_accum=accum, grad_clip=1.0)
    job = train({"w": w, "b": b}, loss_fn, settings, JobContext())
    try:
        while True:
            next(job)
    except StopIteration:
        pass
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"w": w.detach().clone(), "b": b.detach().clone(),
                    "world": int(os.environ.get("WORLD_SIZE", "1"))}, out)


if __name__ == "__main__":
    main()
