"""Seed sharding over torch.distributed ranks, for the bench.

Launched by ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``), each rank
generates its share of the seeds; rank 0 gathers samples, latencies and statistics and
computes the metrics over all seeds, so the numbers match a single-process run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from blockdance_lab.compare import PolicyRun


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed launch.

    Args:
        rank: This process's rank (0 when not distributed).
        world_size: Number of processes (1 when not distributed).
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env() -> DistContext:
    """Join the process group a launcher describes (``WORLD_SIZE`` > 1), else run alone.

    The backend is NCCL when CUDA is available and gloo otherwise. An already initialised
    group is used as is.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size())


def shard(seeds: Sequence[int], ctx: DistContext) -> list[int]:
    """This rank's seeds: every ``world_size``-th, starting at ``rank``."""
    return list(seeds)[ctx.rank :: ctx.world_size]


def gather_runs(
    runs: list[PolicyRun], seeds: Sequence[int], ctx: DistContext
) -> list[PolicyRun] | None:
    """Merge every rank's runs on rank 0, samples back in the order of ``seeds``.

    Each repeat's latency becomes the slowest rank's (the wall time of the sharded job),
    and cache bytes are summed over the ranks (each holds the cache of its shard). The
    decisions recorded are rank 0's: static policies decide alike on every rank, while
    adaptive ones decide per batch, so their decisions may differ between shards.

    Args:
        runs: This rank's runs, on its shard of ``seeds``.
        seeds: All seeds, in the order results are reported.
        ctx: The distributed context.

    Returns:
        The merged runs on rank 0; None on the other ranks.
    """
    if ctx.world_size == 1:
        return runs
    payload = [(r.label, r.latencies, r.stats, r.samples, r.error) for r in runs]
    group = dist.new_group(backend="gloo")  # objects travel over gloo whatever the backend
    if not isinstance(group, dist.ProcessGroup):  # new_group's sentinel for non-members
        raise RuntimeError("this rank is not in the gloo group it just created")
    gathered: list[object] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(payload, gathered, dst=0, group=group)
    if not ctx.is_main:
        return None
    assert gathered is not None
    shards = [shard(seeds, DistContext(r, ctx.world_size)) for r in range(ctx.world_size)]
    order = {seed: i for i, seed in enumerate(seeds)}
    merged = []
    for j, run in enumerate(runs):
        parts = [gathered[r][j] for r in range(ctx.world_size)]  # type: ignore[index]
        errors = [f"rank {r}: {p[4]}" for r, p in enumerate(parts) if p[4] is not None]
        if errors:  # failed on some rank: the row has no complete result
            merged.append(
                replace(run, latencies=[], samples=torch.empty(0), error="; ".join(errors))
            )
            continue
        samples = torch.cat([p[3] for p in parts])  # (N, ...) in shard order
        shard_order = [s for sh in shards for s in sh]
        index = torch.tensor([order[s] for s in shard_order])
        ordered = torch.empty_like(samples)
        ordered[index] = samples
        latencies = [max(p[1][k] for p in parts) for k in range(len(run.latencies))]
        stats = replace(
            run.stats,
            cache_bytes=sum(p[2].cache_bytes for p in parts),
            peak_cache_bytes=sum(p[2].peak_cache_bytes for p in parts),
        )
        merged.append(PolicyRun(run.label, latencies, stats, ordered, external=run.external))
    return merged
