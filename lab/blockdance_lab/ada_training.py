"""Training BlockDance-Ada's decision network: :func:`train_ada` and ``blockdance train-ada``.

The recipe (issue 17, docs/ada.md): for training seeds disjoint from the demo's and bench's
(``100000`` on by default; those use ``0..N-1``), *precompute* the latent entering the
model at step ``ρ`` and the conditions the policy reads there (the network's inputs), the
sampler's state at step ``ρ - 1`` (where rollouts resume: that step computes fully again,
so each rollout holds a boundary state before the first step it may reuse) and the
full-compute result. Then per update: draw ``M`` states, the network's cache-step
probabilities ``m`` for them, and ``K`` Bernoulli action vectors ``u`` per state; run the
``K x M`` rollouts as one batch through the per-sample runtime (each sample reuses blocks
``0..boundary`` where its ``u`` says reuse); reward ``R = C(u) + λ·Q(u)`` with ``C`` the
share of reuse steps and ``Q`` the SSIM to the same seed's full-compute result; REINFORCE
with a leave-one-out baseline over the ``K`` rollouts of a state; Adam.

The ``static`` variant (the Learning-to-Cache-style control) learns per-step logits with
no input the same way. Rollouts run the workload's own model and sampler arithmetic
(:class:`DiTLoop`, :class:`SD3Loop`); a test checks them against ``workload.generate``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from blockdance import PolicyLike, Registry, attach, default_registry
from blockdance.policies._common import round_half_up
from blockdance.policies.ada import (
    ADA_ARCH,
    AdaConfig,
    DeciderConfig,
    DecisionNetwork,
    StaticSchedule,
    StepMaskConfig,
    StepMaskPolicy,
    build_decider,
)
from blockdance.policy import PolicyConfig, StepContext
from blockdance_lab.evaluation.metrics import ssim
from blockdance_lab.workload import DEFAULT_WORKLOAD, GenerateRequest, Workload, get_workload

__all__ = [
    "AdaTrainConfig",
    "AdaTrainResult",
    "DiTLoop",
    "Precomputed",
    "SD3Loop",
    "add_command",
    "evaluate_policies",
    "loop_for",
    "precompute",
    "rollout",
    "train_ada",
]

#: Per-sample conditioning of a sampling loop: a tensor or a tuple of tensors, first dim n.
Cond = Any


# ---------------------------------------------------------------------------------------------
# Sampling loops that can resume part-way
# ---------------------------------------------------------------------------------------------
class SamplingLoop(Protocol):
    """A workload's sampler, one step at a time, so a rollout can start at any step.

    Attributes:
        model: The denoiser blockdance attaches to.
        num_steps: Steps of the schedule.
        copies: Guidance copies of each sample in one model call (``guidance_batch``).
    """

    model: nn.Module
    num_steps: int
    copies: int

    def start(self, seeds: Sequence[int]) -> tuple[torch.Tensor, Cond]:
        """The starting state ``x`` (N, ...) of the seeds and their conditioning."""
        ...

    def begin_run(self, first: int) -> None:
        """Set the scheduler up for a run whose first step is ``first``."""
        ...

    def step(self, x: torch.Tensor, cond: Cond, i: int) -> torch.Tensor:
        """Step ``i``: the model call(s) and the scheduler's update."""
        ...

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Final state -> what ``workload.generate`` returns."""
        ...

    def condition_kind(self) -> tuple[Literal["classes", "vector"], int]:
        """What the policy reads as the condition: ``("classes", rows)`` or ``("vector", D)``."""
        ...


class DiTLoop:
    """:func:`blockdance_lab.zoo.dit.sampling.sample_dit` in batched guidance, by steps.

    Args:
        sampler: The workload's ``DiTSampler``.
        num_steps: Steps of the schedule.
    """

    def __init__(self, sampler: Any, num_steps: int) -> None:
        self.model: nn.Module = sampler.transformer
        self.num_steps = num_steps
        self.guidance = float(sampler.guidance_scale)
        self.copies = 2 if self.guidance > 1 else 1
        self.scheduler = copy.deepcopy(sampler.scheduler)
        self.scheduler.set_timesteps(num_steps)

    def start(self, seeds: Sequence[int]) -> tuple[torch.Tensor, Cond]:
        model: Any = self.model
        param = next(model.parameters())
        shape = (model.in_channels, model.input_size, model.input_size)
        noise = GenerateRequest(tuple(seeds), self.num_steps).noise(shape, like=param)
        labels = torch.tensor([s % model.num_classes for s in seeds], device=param.device)
        return noise * self.scheduler.init_noise_sigma, labels

    def begin_run(self, first: int) -> None:
        self.scheduler.set_timesteps(self.num_steps)  # DDIM's step is stateless

    def step(self, x: torch.Tensor, cond: Cond, i: int) -> torch.Tensor:
        model: Any = self.model
        sched = self.scheduler
        t = sched.timesteps[i]
        n, c = x.shape[0], model.in_channels
        inp = sched.scale_model_input(x, t)  # (N, C, H, W)
        ts = t.reshape(1).repeat(n).to(x.device)  # (N,)
        if self.copies == 1:
            noise = model(inp, ts, cond)[:, :c]
        else:
            nulls = torch.full_like(cond, model.num_classes)
            both = model(torch.cat([inp, inp]), torch.cat([ts, ts]), torch.cat([cond, nulls]))
            cond_eps, uncond_eps = both[:, :c].chunk(2)
            noise = uncond_eps + self.guidance * (cond_eps - uncond_eps)
        return sched.step(noise, t, x).prev_sample

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1)

    def condition_kind(self) -> tuple[Literal["classes", "vector"], int]:
        model: Any = self.model
        return "classes", int(model.y_embedder.embedding_table.num_embeddings)


class SD3Loop:
    """The tiny SD3 sampler (``SD3Sampler.__call__``) by steps: batched guidance, the
    unconditional half first, flow-matching Euler.

    Args:
        sampler: The workload's ``SD3Sampler``.
        num_steps: Steps of the schedule.
    """

    def __init__(self, sampler: Any, num_steps: int) -> None:
        self.tiny = sampler.model
        self.model: nn.Module = sampler.transformer
        self.captions = sampler.captions
        self.num_steps = num_steps
        self.guidance = float(sampler.guidance_scale)
        self.copies = 2
        self.scheduler = copy.deepcopy(sampler.scheduler)

    def start(self, seeds: Sequence[int]) -> tuple[torch.Tensor, Cond]:
        cfg = self.tiny.cfg
        param = next(self.tiny.parameters())
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        x = GenerateRequest(tuple(seeds), self.num_steps).noise(shape, like=param)
        n = x.shape[0]
        embeds, pooled = self.tiny.encode([""] * n + self.captions(list(seeds)))  # (2N, L, D)
        return x, (embeds[:n], embeds[n:], pooled[:n], pooled[n:])

    def begin_run(self, first: int) -> None:
        param = next(self.model.parameters())
        self.scheduler.set_timesteps(self.num_steps, device=param.device)
        self.scheduler.set_begin_index(first)

    def step(self, x: torch.Tensor, cond: Cond, i: int) -> torch.Tensor:
        embeds_u, embeds_c, pooled_u, pooled_c = cond
        t = self.scheduler.timesteps[i]
        n = x.shape[0]
        v = self.model(
            hidden_states=torch.cat([x, x]),
            encoder_hidden_states=torch.cat([embeds_u, embeds_c]),
            pooled_projections=torch.cat([pooled_u, pooled_c]),
            timestep=t.expand(2 * n),
            return_dict=False,
        )[0]  # (2N, C, H, W)
        v_uncond, v_cond = v.chunk(2)
        v = v_uncond + self.guidance * (v_cond - v_uncond)
        return self.scheduler.step(v, t, x, return_dict=False)[0]

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1)

    def condition_kind(self) -> tuple[Literal["classes", "vector"], int]:
        return "vector", int(self.tiny.cfg.text_dim)


def loop_for(target: Any, num_steps: int) -> SamplingLoop:
    """The resumable loop of a workload's target (``workload.build()``).

    Raises:
        TypeError: The target is not a sampler this module knows.
    """
    from blockdance_lab.zoo.dit.workloads import DiTSampler
    from blockdance_lab.zoo.sd3.workloads import SD3Sampler

    if isinstance(target, DiTSampler):
        return DiTLoop(target, num_steps)
    if isinstance(target, SD3Sampler):
        return SD3Loop(target, num_steps)
    raise TypeError(
        f"train-ada runs rollouts with the samplers of the image workloads (DiTSampler: "
        f"dit-tiny-shapes, dit-s2; SD3Sampler: sd3-tiny-shapes); this workload builds a "
        f"{type(target).__name__}. Add a loop for it in blockdance_lab.ada_training."
    )


def _select(cond: Cond, index: torch.Tensor) -> Cond:
    if isinstance(cond, torch.Tensor):
        return cond.index_select(0, index.to(cond.device))
    return tuple(c.index_select(0, index.to(c.device)) for c in cond)


def _cat(parts: Sequence[Cond]) -> Cond:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(list(parts))
    return tuple(torch.cat(list(p)) for p in zip(*parts))


# ---------------------------------------------------------------------------------------------
# Rollouts through the per-sample runtime
# ---------------------------------------------------------------------------------------------
class RolloutConfig(StepMaskConfig):
    """Options of the training rollouts' policy (not registered: passed as an instance)."""

    kind: Literal["ada-rollout"] = "ada-rollout"


class RolloutPolicy(StepMaskPolicy[RolloutConfig]):
    """At step ρ, each sample caches where :attr:`mask` says (all of them when None); it
    records the latent and conditions it was given there (the decision network's inputs)."""

    config_class: ClassVar[type[PolicyConfig]] = RolloutConfig

    def __init__(self, config: RolloutConfig) -> None:
        super().__init__(config)
        self.mask: torch.Tensor | None = None
        self.seen: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def choose(
        self, latent: torch.Tensor, conditions: torch.Tensor | None, ctx: StepContext
    ) -> tuple[torch.Tensor, None]:
        self.seen = (latent.detach().clone(), None if conditions is None else conditions.clone())
        assert self.info is not None and self.info.num_steps is not None
        if self.mask is None:
            remaining = self.info.num_steps + self.offset - self.first_step
            return torch.ones(latent.shape[0], remaining, dtype=torch.bool), None
        return self.mask, None


def rollout(
    loop: SamplingLoop,
    x: torch.Tensor,
    cond: Cond,
    first: int,
    policy: RolloutPolicy,
    registry: Registry,
    capture: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run steps ``first..s-1`` from ``x`` under ``policy``; the final pixels, and the state
    entering step ``capture`` when asked.

    The generation starts at ``first`` of the schedule (``schedule_offset``), so the policy
    places its decision step on the schedule's own indices.
    """
    loop.begin_run(first)
    captured = None
    with (
        attach(
            loop.model,
            policy,
            registry=registry,
            num_steps=loop.num_steps,
            guidance_batch=loop.copies,
        ) as handle,
        handle.generation(num_steps=loop.num_steps - first, schedule_offset=first),
        torch.inference_mode(),
    ):
        for i in range(first, loop.num_steps):
            if i == capture:
                captured = x.clone()
            x = loop.step(x, cond, i)
            handle.end_step()
    return loop.pixels(x), captured


@dataclass
class Precomputed:
    """What training reads for each training seed.

    Args:
        seeds: The training seeds.
        start: The sampler's state entering step ``ρ - 1``, where rollouts resume.
        cond: The sampler's per-sample conditioning.
        latent: The latent the policy reads at step ``ρ`` (one copy per sample).
        conditions: The condition copies it reads there ``(k, n, ...)``, or None.
        full: The full-compute result (pixels).
        first_step: ``ρ``.
        minutes: Wall time of the precompute.
    """

    seeds: list[int]
    start: torch.Tensor
    cond: Cond
    latent: torch.Tensor
    conditions: torch.Tensor | None
    full: torch.Tensor
    first_step: int
    minutes: float = 0.0


def precompute(
    loop: SamplingLoop,
    seeds: Sequence[int],
    rho: float,
    boundary: int | None,
    registry: Registry,
    *,
    chunk: int = 32,
    progress: bool = False,
) -> Precomputed:
    """Run each seed fully once, recording what :class:`Precomputed` holds."""
    first = round_half_up(rho * loop.num_steps)
    began = time.perf_counter()
    parts: list[tuple[torch.Tensor, Cond, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
    chunks = [list(seeds[i : i + chunk]) for i in range(0, len(seeds), chunk)]
    for part in tqdm(chunks, desc="precompute", disable=not progress):
        x, cond = loop.start(part)
        policy = RolloutPolicy(RolloutConfig(rho=rho, boundary=boundary))
        full, start = rollout(loop, x, cond, 0, policy, registry, capture=first - 1)
        assert start is not None and policy.seen is not None
        latent, conditions = policy.seen
        # clones made outside inference mode: the network trains on them
        parts.append(
            (
                start.clone(),
                cond,
                latent.clone(),
                None if conditions is None else conditions.clone(),
                full.clone(),
            )
        )
    conds = [p[3] for p in parts]
    return Precomputed(
        seeds=list(seeds),
        start=torch.cat([p[0] for p in parts]),
        cond=_cat([p[1] for p in parts]),
        latent=torch.cat([p[2] for p in parts]),
        conditions=None if conds[0] is None else torch.cat([c for c in conds if c is not None], 1),
        full=torch.cat([p[4] for p in parts]),
        first_step=first,
        minutes=(time.perf_counter() - began) / 60,
    )


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@dataclass
class AdaTrainConfig:
    """The recipe of one decision network.

    Args:
        lam: λ in ``R = C(u) + λ·Q(u)``.
        variant: ``"network"`` (per sample) or ``"static"`` (the same schedule for all).
        rho: Share of the steps computed fully before deciding.
        boundary: Last reused block; None: the architecture's default.
        steps: Denoising steps (default: the workload's); the network is fixed to it.
        train_seeds: Training states, seeds ``seed_offset..seed_offset + train_seeds - 1``.
        seed_offset: First training seed (the demo and bench use ``0..N-1``).
        states: States ``M`` per update.
        rollouts: Rollouts ``K`` per state (leave-one-out baseline: at least 2).
        lr: Adam learning rate of the network's weights.
        schedule_lr: Adam learning rate of the per-step logits themselves: the network's
            output bias and per-condition logits, the static schedule's logits. Higher than
            ``lr`` so that a schedule moves within a CPU budget of a few hundred updates,
            and the same for both variants.
        entropy: Weight of an entropy bonus on the cache-step probabilities (summed over
            steps): keeps the policy drawing different actions, without which REINFORCE stops
            learning once every m is near 0 or 1 (all K rollouts alike: no advantage).
        entropy_decay: Lower the entropy bonus linearly to 0 over the budget (the larger of
            the share of ``updates`` done and the share of ``max_minutes`` spent), so the
            policy explores early and ends deterministic, as greedy inference uses it.
        updates: Most updates (training also stops after ``max_minutes``).
        max_minutes: Wall-clock budget of the updates (the precompute is not counted).
        init_cache_prob: Cache-step probability of every step at initialisation; with
            ``init_group``, that of the grouping's cache steps (the others start at
            ``1 - init_cache_prob``).
        init_group: Start from BlockDance-N's grouping of the decided steps (N =
            ``init_group``): the first of every N steps from step ρ a cache step, the others
            reuse steps, so the rollouts explore around a known schedule instead of around
            random reuse of half the steps. None: every step at ``init_cache_prob``.
        dim: Token width of the network.
        depth: Its Transformer blocks.
        heads: Its attention heads.
        patch_size: Latent patch side (None: a side / 8, 64 tokens on a square latent).
        seed: Seed of the initialisation and of every draw.
    """

    lam: float = 2.0
    variant: Literal["network", "static"] = "network"
    rho: float = 0.4
    boundary: int | None = None
    steps: int | None = None
    train_seeds: int = 64
    seed_offset: int = 100_000
    states: int = 8
    rollouts: int = 4
    lr: float = 3e-3
    schedule_lr: float = 3e-2
    entropy: float = 0.0
    entropy_decay: bool = False
    updates: int = 1000
    max_minutes: float = 10.0
    init_cache_prob: float = 0.5
    init_group: int | None = None
    dim: int = 64
    depth: int = 3
    heads: int = 4
    patch_size: int | None = None
    seed: int = 0

    def check(self) -> None:
        """Refuse values that cannot train, naming the option."""
        if self.rollouts < 2:
            raise ValueError(f"rollouts={self.rollouts}: the leave-one-out baseline needs >= 2")
        if not 0 < self.states <= self.train_seeds:
            raise ValueError(f"states={self.states} must be in 1..train_seeds={self.train_seeds}")
        if not 0 < self.init_cache_prob < 1:
            raise ValueError(f"init_cache_prob={self.init_cache_prob} must be in (0, 1)")
        if self.init_group is not None and self.init_group < 1:
            raise ValueError(f"init_group={self.init_group} must be at least 1 (BlockDance's N)")
        if self.variant not in ("network", "static"):
            raise ValueError(f"variant={self.variant!r}: 'network' or 'static'")


@dataclass
class AdaTrainResult:
    """What :func:`train_ada` wrote and measured.

    Args:
        weights: The ``.safetensors`` file (its sidecar beside it).
        curve: The training-curve PNG, or None without matplotlib.
        history: Per update: ``reward``, ``C``, ``Q`` (rollout means), ``greedy_C`` (the
            reuse share the greedy policy would give the update's states), ``entropy``
            (mean per step, nats) and ``entropy_weight`` (the bonus's weight that update).
        minutes: Wall time of the updates.
    """

    weights: Path
    curve: Path | None
    history: dict[str, list[float]] = field(default_factory=dict)
    minutes: float = 0.0


def _boundary_of(loop: SamplingLoop, boundary: int | None, registry: Registry) -> tuple[int, str]:
    """The resolved boundary and the architecture's name."""
    with attach(loop.model, "none", registry=registry) as handle:
        spec, blocks = handle.architecture, len(handle.slots)
    return (spec.default_boundary(blocks) if boundary is None else boundary), spec.name


def _decider_config(
    cfg: AdaTrainConfig, loop: SamplingLoop, pre: Precomputed, num_steps: int
) -> DeciderConfig:
    if cfg.variant == "static":
        return DeciderConfig("static", num_steps, pre.first_step, copies=loop.copies)
    kind, size = loop.condition_kind()
    channels, height, width = pre.latent.shape[1:]
    patch = cfg.patch_size or max(1, min(height, width) // 8)
    return DeciderConfig(
        kind="network",
        num_steps=num_steps,
        first_step=pre.first_step,
        copies=loop.copies,
        condition=kind,
        condition_size=size,
        in_channels=int(channels),
        input_size=(int(height), int(width)),
        patch_size=patch,
        dim=cfg.dim,
        depth=cfg.depth,
        heads=cfg.heads,
    )


def initial_cache_probs(cfg: AdaTrainConfig, decided: int) -> torch.Tensor:
    """Each decided step's cache-step probability at initialisation, ``(decided,)``."""
    p = torch.full((decided,), cfg.init_cache_prob)
    if cfg.init_group is not None:
        reuse = torch.arange(decided) % cfg.init_group != 0  # BlockDance-N's grouping from ρ
        p[reuse] = 1 - cfg.init_cache_prob
    return p


def _init_bias(network: nn.Module, p: torch.Tensor) -> None:
    """Every step's cache-step probability ``p`` ``(decided,)`` at initialisation (the last
    layer is zero, so the bias alone sets the logits)."""
    logit = torch.log(p / (1 - p))
    with torch.no_grad():
        if isinstance(network, StaticSchedule):
            network.logits.copy_(logit)
        elif isinstance(network, DecisionNetwork):
            final = network.head[-1]
            assert isinstance(final, nn.Linear)
            final.bias.copy_(logit)


def _param_groups(network: nn.Module, cfg: AdaTrainConfig) -> list[dict[str, Any]]:
    """The per-step logits at ``schedule_lr``, every other weight at ``lr``."""
    schedule: list[nn.Parameter] = []
    if isinstance(network, StaticSchedule):
        schedule.append(network.logits)
    elif isinstance(network, DecisionNetwork):
        final = network.head[-1]
        assert isinstance(final, nn.Linear)
        schedule.append(final.bias)
        if network.cond_logits is not None:
            schedule += list(network.cond_logits.parameters())
    ids = {id(p) for p in schedule}
    rest = [p for p in network.parameters() if id(p) not in ids]
    groups = [{"params": schedule, "lr": cfg.schedule_lr}]
    return groups + ([{"params": rest, "lr": cfg.lr}] if rest else [])


def train_ada(
    workload: str | Workload,
    lam: float = 2.0,
    *,
    config: AdaTrainConfig | None = None,
    out: str | Path = "outputs/ada",
    registry: Registry | None = None,
    precomputed: Precomputed | None = None,
    progress: bool = True,
) -> AdaTrainResult:
    """Train a decision network for ``workload`` and write its files.

    Args:
        workload: A registered workload name, or the workload.
        lam: λ (overrides ``config.lam``).
        config: The rest of the recipe.
        out: Folder for ``<workload>-<variant>-lam<λ>.safetensors`` / ``.json`` /
            ``-curve.png`` (``-rho<ρ>`` added to the stem when ρ is not 0.4).
        registry: Where policies and architectures resolve (default: the process-wide one).
        precomputed: States from an earlier :func:`precompute` with the same workload,
            seeds, steps and ρ (a λ sweep shares one).
        progress: Progress bars.

    Returns:
        The files written and the training curve.
    """
    registry = registry or default_registry()
    wl = workload if isinstance(workload, Workload) else get_workload(workload, registry)
    cfg = dataclasses.replace(config or AdaTrainConfig(), lam=lam)
    cfg.check()
    num_steps = cfg.steps or wl.num_steps
    loop = loop_for(wl.build(), num_steps)
    boundary, architecture = _boundary_of(loop, cfg.boundary, registry)
    seeds = list(range(cfg.seed_offset, cfg.seed_offset + cfg.train_seeds))
    pre = precomputed or precompute(loop, seeds, cfg.rho, boundary, registry, progress=progress)
    if pre.seeds != seeds or pre.first_step != round_half_up(cfg.rho * num_steps):
        raise ValueError(
            f"the precomputed states are for seeds {pre.seeds[0]}.. ({len(pre.seeds)}) and step "
            f"{pre.first_step}; this run trains on {seeds[0]}.. ({len(seeds)}) from step "
            f"{round_half_up(cfg.rho * num_steps)}: precompute them for this recipe"
        )

    torch.manual_seed(cfg.seed)
    dcfg = _decider_config(cfg, loop, pre, num_steps)
    network = build_decider(dcfg).train()
    _init_bias(network, initial_cache_probs(cfg, num_steps - pre.first_step))
    opt = torch.optim.Adam(_param_groups(network, cfg))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    policy = RolloutPolicy(RolloutConfig(rho=cfg.rho, boundary=boundary))
    history: dict[str, list[float]] = {
        "reward": [],
        "C": [],
        "Q": [],
        "greedy_C": [],
        "entropy": [],
        "entropy_weight": [],
    }
    k, m, n_seeds = cfg.rollouts, cfg.states, len(seeds)
    order = torch.randperm(n_seeds, generator=gen)
    cursor = 0
    start = time.perf_counter()
    bar = tqdm(
        range(cfg.updates), desc=f"train-ada {cfg.variant} λ={cfg.lam:g}", disable=not progress
    )
    for update in bar:
        spent = max(update / cfg.updates, (time.perf_counter() - start) / (cfg.max_minutes * 60))
        beta = cfg.entropy * (max(0.0, 1.0 - spent) if cfg.entropy_decay else 1.0)
        if cursor + m > n_seeds:  # a new epoch: a new order of the states
            order, cursor = torch.randperm(n_seeds, generator=gen), 0
        idx = order[cursor : cursor + m]
        cursor += m
        conditions = None if pre.conditions is None else pre.conditions[:, idx]
        logits = network(pre.latent[idx], conditions)  # (M, R)
        probs = torch.sigmoid(logits)
        u = torch.bernoulli(probs.detach().expand(k, -1, -1), generator=gen)  # (K, M, R), 1: cache
        policy.mask = u.reshape(k * m, -1).bool()
        rows = idx.repeat(k)  # rollout j = state j % M
        pixels, _ = rollout(
            loop, pre.start[rows], _select(pre.cond, rows), pre.first_step - 1, policy, registry
        )
        q = ssim(pixels.float(), pre.full[rows].float()).reshape(k, m)  # (K, M)
        c = 1 - u.mean(-1)  # share of reuse steps
        reward = c + cfg.lam * q
        baseline = (reward.sum(0, keepdim=True) - reward) / (k - 1)  # leave one out
        log_prob = (
            u * nn.functional.logsigmoid(logits) + (1 - u) * nn.functional.logsigmoid(-logits)
        ).sum(-1)  # (K, M)
        entropy = -(probs * nn.functional.logsigmoid(logits)) - (
            1 - probs
        ) * nn.functional.logsigmoid(-logits)  # (M, R) Bernoulli entropy
        loss = -((reward - baseline).detach() * log_prob).mean() - beta * entropy.sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["reward"].append(float(reward.mean()))
        history["C"].append(float(c.mean()))
        history["Q"].append(float(q.mean()))
        history["greedy_C"].append(float((probs < 0.5).float().mean()))
        history["entropy"].append(float(entropy.detach().mean()))  # per step, nats (ln 2: m = 0.5)
        history["entropy_weight"].append(beta)
        bar.set_postfix(R=f"{history['reward'][-1]:.3f}", C=f"{c.mean():.2f}", Q=f"{q.mean():.3f}")
        if time.perf_counter() - start > cfg.max_minutes * 60:
            break
    minutes = (time.perf_counter() - start) / 60

    out = Path(out)
    stem = f"{wl.name}-{cfg.variant}-lam{cfg.lam:g}"
    if cfg.rho != AdaTrainConfig.rho:  # another ρ: another file, not an overwrite
        stem += f"-rho{cfg.rho:g}"
    weights = out / f"{stem}.safetensors"
    network = network.eval()
    meta = {
        "arch": ADA_ARCH,
        "config": dcfg.to_dict(),
        "workload": wl.name,
        "architecture": architecture,
        "boundary": boundary,
        "recipe": asdict(cfg),
        "reward": "R = C(u) + lam * SSIM(rollout, full compute of the same seed)",
        "train_seeds": seeds,
        "updates": len(history["reward"]),
        "minutes": round(minutes, 2),
        "precompute_seconds": round(pre.minutes * 60, 2),
        "parameters": sum(p.numel() for p in network.parameters()),
        "threads": torch.get_num_threads(),
        "command": " ".join(sys.argv),
        "history": history,
    }
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(weights))
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    curve = _save_curve(history, out / f"{stem}-curve.png", f"{wl.name}, {cfg.variant}, λ={lam:g}")
    return AdaTrainResult(weights, curve, history, minutes)


def _running_mean(values: list[float], window: int = 10) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def _save_curve(history: dict[str, list[float]], path: Path, title: str) -> Path | None:
    """Reward, C and Q per update (thin) and their running mean over 10 updates (thick)."""
    from blockdance_lab.report import load_pyplot

    plt = load_pyplot()
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = range(1, len(history["reward"]) + 1)
    series = [
        (left, "reward", "reward R (rollouts)", "C0"),
        (right, "C", "C: reuse share (rollouts)", "C1"),
        (right, "greedy_C", "C: reuse share (greedy)", "C2"),
        (right, "Q", "Q: SSIM to full compute", "C3"),
    ]
    for ax, key, label, color in series:
        ax.plot(steps, history[key], color=color, alpha=0.3, linewidth=0.8)
        ax.plot(steps, _running_mean(history[key]), color=color, label=label)
    for ax in (left, right):
        ax.set_xlabel("update")
        ax.legend(fontsize=7)
    right.set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Evaluation on held-out seeds
# ---------------------------------------------------------------------------------------------
def evaluate_policies(
    workload: str | Workload,
    policies: Sequence[tuple[str, PolicyLike]],
    *,
    seeds: Sequence[int],
    steps: int | None = None,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """Each policy's ideal saving and SSIM/PSNR to the full model, through ``workload.generate``
    with the guidance batching the policy needs (``attach(guidance_batch=...)``).

    Returns:
        One row per policy, the full-compute reference first: ``label``, ``ideal`` (blocks
        skipped / blocks run in full), ``ssim`` (mean over seeds), ``reuse_steps`` (per
        sample, for per-sample policies).
    """
    from blockdance_lab.evaluation.metrics import psnr

    registry = registry or default_registry()
    wl = workload if isinstance(workload, Workload) else get_workload(workload, registry)
    num_steps = steps or wl.num_steps
    target = wl.build()
    copies = loop_for(target, num_steps).copies
    request = GenerateRequest(tuple(seeds), num_steps)
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    for label, policy in [("full compute", "none"), *policies]:
        with (
            attach(
                target, policy, registry=registry, num_steps=num_steps, guidance_batch=copies
            ) as handle,
            torch.inference_mode(),
        ):
            samples = wl.generate(target, request).float()
        stats = handle.stats
        reference = samples if reference is None else reference
        row: dict[str, Any] = {
            "label": label,
            "ideal": stats.saved_fraction,
            "ssim": float(ssim(samples, reference).mean()),
            "psnr": float(psnr(samples, reference, max_db=100.0).mean()),
        }
        chosen = handle.policy
        if isinstance(chosen, StepMaskPolicy):
            row["reuse_steps"] = chosen.reuse_steps_per_sample
            row["reuse_share"] = sum(chosen.reuse_share_per_sample) / len(seeds)
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain table of :func:`evaluate_policies` rows."""
    lines = [f"{'policy':34} {'ideal saving':>12} {'SSIM':>7} {'PSNR':>7}"]
    for r in rows:
        lines.append(f"{r['label']:34} {r['ideal']:>12.1%} {r['ssim']:>7.3f} {r['psnr']:>7.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def cmd_train_ada(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = default_registry()
    workload = get_workload(args.workload, registry)
    variants = ["network", "static"] if args.variant == "both" else [args.variant]
    base = AdaTrainConfig(
        rho=args.rho,
        boundary=args.boundary,
        steps=args.steps,
        train_seeds=args.train_seeds,
        seed_offset=args.seed_offset,
        states=args.states,
        rollouts=args.rollouts,
        lr=args.lr,
        schedule_lr=args.schedule_lr,
        entropy=args.entropy,
        entropy_decay=args.entropy_decay,
        updates=args.updates,
        max_minutes=args.minutes,
        init_cache_prob=args.init_cache_prob,
        init_group=args.init_group,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        seed=args.seed,
    )
    base.check()
    num_steps = args.steps or workload.num_steps
    loop = loop_for(workload.build(), num_steps)
    boundary, _ = _boundary_of(loop, args.boundary, registry)
    seeds = list(range(args.seed_offset, args.seed_offset + args.train_seeds))
    print(f"workload {workload.name}: precomputing {len(seeds)} training states ({seeds[0]}..)")
    pre = precompute(loop, seeds, args.rho, boundary, registry, progress=not args.quiet)
    trained: list[tuple[str, PolicyLike]] = []
    for variant in variants:
        for lam in args.lam:
            cfg = AdaTrainConfig(**{**asdict(base), "variant": variant, "lam": lam})
            result = train_ada(
                workload,
                lam,
                config=cfg,
                out=args.out,
                registry=registry,
                precomputed=pre,
                progress=not args.quiet,
            )
            h = result.history
            tail = max(1, len(h["reward"]) // 5)  # the last fifth of the updates

            def mean(xs: list[float], tail: int = tail) -> float:
                return sum(xs[-tail:]) / len(xs[-tail:])

            print(
                f"{variant} λ={lam:g}: {len(h['reward'])} updates in {result.minutes:.1f} min; "
                f"reward {h['reward'][0]:.3f} -> {mean(h['reward']):.3f} (last {tail}), "
                f"C {mean(h['C']):.2f}, Q {mean(h['Q']):.3f}, greedy C {mean(h['greedy_C']):.2f}"
            )
            print(f"wrote {result.weights}, {result.weights.with_suffix('.json')}, {result.curve}")
            policy = AdaConfig(weights=result.weights, rho=args.rho, boundary=args.boundary)
            trained.append((f"ada {variant} λ={lam:g}", policy))
    if args.eval_seeds:
        print(f"\nheld-out seeds 0..{args.eval_seeds - 1}, {num_steps} steps:")
        policies: list[tuple[str, PolicyLike]] = [
            (f"blockdance N={n}", {"kind": "blockdance", "N": n}) for n in (2, 3, 4)
        ]
        rows = evaluate_policies(
            workload,
            policies + trained,
            seeds=range(args.eval_seeds),
            steps=num_steps,
            registry=registry,
        )
        print(format_rows(rows))
        path = Path(args.out) / f"{workload.name}-eval.json"
        path.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


def add_command(sub: Any) -> None:
    """Add ``blockdance train-ada`` to the command line's subparsers."""
    defaults = AdaTrainConfig()
    p = sub.add_parser(
        "train-ada", help="train BlockDance-Ada's decision network on a workload (REINFORCE)"
    )
    p.add_argument("--workload", default=DEFAULT_WORKLOAD, help="registered image workload")
    p.add_argument(
        "--lam", type=float, nargs="+", default=[defaults.lam], help="λ value(s): R = C + λ·SSIM"
    )
    p.add_argument(
        "--variant",
        choices=["network", "static", "both"],
        default="network",
        help="per-sample network, the static learned schedule (control), or both",
    )
    p.add_argument("--minutes", type=float, default=defaults.max_minutes, help="budget per run")
    p.add_argument("--updates", type=int, default=defaults.updates, help="most updates per run")
    p.add_argument("--states", type=int, default=defaults.states, help="states M per update")
    p.add_argument("--rollouts", type=int, default=defaults.rollouts, help="rollouts K per state")
    p.add_argument("--train-seeds", type=int, default=defaults.train_seeds, help="training states")
    p.add_argument(
        "--seed-offset", type=int, default=defaults.seed_offset, help="first training seed"
    )
    p.add_argument("--lr", type=float, default=defaults.lr, help="Adam lr of the weights")
    p.add_argument(
        "--schedule-lr",
        type=float,
        default=defaults.schedule_lr,
        help="Adam lr of the per-step logits (output bias, per-condition and static logits)",
    )
    p.add_argument("--entropy", type=float, default=defaults.entropy, help="entropy bonus weight")
    p.add_argument(
        "--entropy-decay",
        action="store_true",
        help="lower the entropy bonus linearly to 0 over the budget",
    )
    p.add_argument("--rho", type=float, default=defaults.rho, help="share of full steps first")
    p.add_argument("--boundary", type=int, default=None, help="last reused block")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (fixed by training)")
    p.add_argument(
        "--init-cache-prob",
        type=float,
        default=defaults.init_cache_prob,
        help="initial cache-step probability (with --init-group: of the grouping's cache steps)",
    )
    p.add_argument(
        "--init-group",
        type=int,
        default=None,
        help="start from BlockDance-N's grouping of the decided steps (N)",
    )
    p.add_argument("--dim", type=int, default=defaults.dim, help="network width")
    p.add_argument("--depth", type=int, default=defaults.depth, help="Transformer blocks")
    p.add_argument("--heads", type=int, default=defaults.heads, help="attention heads")
    p.add_argument("--seed", type=int, default=defaults.seed, help="initialisation/draw seed")
    p.add_argument(
        "--eval-seeds",
        type=int,
        default=0,
        help="afterwards, compare greedy Ada with BlockDance N=2,3,4 on seeds 0..n-1",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="outputs/ada", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_ada)
