"""Data-parallel training under ``torchrun``: process group, sharding of each global batch, agreement.

``torchrun --nproc_per_node N -m mmvae train ...`` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; :func:`from_env` reads them. Every rank draws the same global batch
(the epoch's permutation comes from a generator seeded by (seed, epoch)) and keeps its own slice, so
the global batch is the one a single process would use; DDP averages the gradients.

Sharding and noise: a global batch of B rows is cut into S = world_size x grad_accum pieces of nearly
equal size (``torch.tensor_split``); piece s is scored with the torch RNG seeded by (seed, step, s,
rollbacks). A run with N ranks therefore takes exactly the steps of a single process with
``grad_accum=N`` (same rows, same Monte Carlo noise); it differs from an unsharded single process only
by which noise is drawn. Each piece's mean loss is weighted by its share of the global batch, so the
averaged gradient is the gradient of the global-batch mean even when B is not a multiple of S.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass
class DistEnv:
    """Where this process sits: rank r of ``world_size`` (1 and 0 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistEnv:
    """Read torchrun's environment; a plain ``mmvae train`` is rank 0 of 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("RANK / WORLD_SIZE / LOCAL_RANK are not integers: launch with torchrun") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"inconsistent torchrun environment (RANK={rank}, WORLD_SIZE={world})")
    return DistEnv(rank, world, local)


def device_for(env: DistEnv, device: torch.device) -> torch.device:
    """Under torchrun each process drives the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and env.active:
        if env.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} GPU(s) on this "
                            f"node: use --nproc_per_node at most the number of GPUs")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return device


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs); a no-op for a single process."""
    if not env.active or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed: run without torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=float(os.environ.get("MMVAE_DIST_TIMEOUT_MIN", 30))))


def shutdown(env: DistEnv, wait_for_all: bool = False) -> None:
    """Leave the process group; after a normal end, first wait until every rank is done (rank 0
    draws the pictures while the others would otherwise tear the group down under it)."""
    if env.active and dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def agree(env: DistEnv, flags: list[bool], device: torch.device) -> list[bool]:
    """Logical OR of each flag over all ranks, so every rank takes the same branch (no deadlock)."""
    if not env.active:
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def sum_over_ranks(env: DistEnv, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum a dict of floats over ranks (same keys everywhere); float64 so sums stay exact enough."""
    if not env.active or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def shard_pieces(index: torch.Tensor, pieces: int) -> tuple[torch.Tensor, ...]:
    """Cut a global batch's row index into ``pieces`` contiguous parts of nearly equal size."""
    return torch.tensor_split(index, pieces)


def noise_seed(seed: int, step: int, piece: int, rollbacks: int) -> int:
    """The RNG seed of one piece of one step: a function of where training stands, not of history, so
    resume, data parallelism and gradient accumulation all draw the same noise. After a rollback the
    count changes and the replayed steps draw fresh noise."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), int(piece), int(rollbacks)]).generate_state(1)[0])
