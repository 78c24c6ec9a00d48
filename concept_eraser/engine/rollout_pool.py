"""A pool of partial DDIM roll-outs from the frozen original model, built once at the start of a run.

ESD-style methods train on x_k, the state after k of n DDIM steps with classifier-free guidance from a
concept. Rolling out afresh every optimizer step costs k UNet passes (x2 for CFG) per sample and was
~95% of a step on a CPU. `build_pool` instead runs `trajectories` full roll-outs in batches and keeps
*every* intermediate state (k = 0..n_steps-1, with t_k the timestep whose noise level x_k has), so one
pass of n steps yields trajectories x n training states. Deterministic from `seed` (noise drawn on the
CPU), so a resumed run rebuilds the identical pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import denoise
from .bundle import ModelBundle
from .denoise import Cond, CondItem


class CondTable:
    """Conditioning per item, encoded once; `rows(idx)` gathers a batch by item index."""

    def __init__(self, bundle: ModelBundle, items: Sequence[CondItem]) -> None:
        self.items = list(items)
        with torch.no_grad():
            self.cond = denoise.encode(bundle, self.items).detach() if self.items else Cond()

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, idx: torch.Tensor) -> Cond:
        idx = idx.to(self._device())
        return self.cond._map(lambda v: v.index_select(0, idx))

    def _device(self):
        for v in (self.cond.labels, self.cond.hidden):
            if v is not None:
                return v.device
        return "cpu"


@dataclass
class RolloutPool:
    x: torch.Tensor  # (N, C, H, W) states x_k
    t: torch.Tensor  # (N,) training timestep of each state
    item: torch.Tensor  # (N,) index into the CondTable the pool was rolled out from
    k: torch.Tensor  # (N,) roll-out step

    def __len__(self) -> int:
        return self.x.shape[0]

    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n random states: (x, t, item index)."""
        idx = torch.randint(0, len(self), (n,), generator=g)
        return self.x[idx], self.t[idx], self.item[idx]

    @staticmethod
    def cat(pools: Sequence[RolloutPool]) -> RolloutPool:
        return RolloutPool(*(torch.cat([getattr(p, f) for p in pools]) for f in ("x", "t", "item", "k")))


@torch.no_grad()
def build_pool(bundle: ModelBundle, table: CondTable, trajectories: int, n_steps: int, guidance: float, seed: int,
               ctx=None, batch: int = 128, max_k: int | None = None) -> RolloutPool:
    """`trajectories` DDIM roll-outs (round-robin over the table's items) of the first `max_k` (default all)
    of `n_steps` steps; every state before each step is kept."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(bundle.scheduler.config)
    sched.set_timesteps(n_steps, device=bundle.device)
    max_k = n_steps if max_k is None else max(1, min(max_k, n_steps))
    g = torch.Generator("cpu").manual_seed(seed % (2**63))
    null = denoise.encode(bundle, [None])
    xs, ts, items, ks = [], [], [], []
    which = torch.arange(trajectories) % max(1, len(table))
    for b0 in range(0, trajectories, batch):
        part = which[b0:b0 + batch]
        n = len(part)
        cond = table.rows(part)
        uncond = null.expand(n)
        x = denoise.noise_like((n, *denoise.x_shape(bundle)), g, bundle) * sched.init_noise_sigma
        for k, t in enumerate(sched.timesteps[:max_k]):
            if ctx is not None:
                ctx.check_cancelled()
            xs.append(x)
            ts.append(t.to(bundle.device).expand(n))
            items.append(part)
            ks.append(torch.full((n,), k))
            if k + 1 < max_k:
                out = denoise.predict_cfg(bundle, sched.scale_model_input(x, t), t, cond, uncond, guidance)
                x = sched.step(out, t, x).prev_sample
    return RolloutPool(torch.cat(xs), torch.cat(ts), torch.cat(items).to(bundle.device), torch.cat(ks))
