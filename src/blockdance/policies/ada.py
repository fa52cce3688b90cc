"""The ``blockdance-ada`` policy: BlockDance-Ada (Zhang et al., CVPR 2025, §3.4), a learned
choice, per sample, of the steps that reuse the structural blocks.

The first ``ρ = round(rho * s)`` of the ``s`` steps compute fully. At the first model call of
step ``ρ`` a small decision network reads each sample's state — the latent ``z_ρ`` entering
the model and the sample's conditioning — and gives ``s - ρ`` logits, one per remaining
step; ``m = sigmoid(logits)`` is the probability of a *cache step* (full compute). Greedy at
inference: a step with ``m >= threshold`` is a cache step, any other step reuses blocks
``0..boundary`` for that sample (output reuse at the boundary, as BlockDance-N), substituting
the boundary's state from the sample's most recent cache step. The decision is made once
per generation and every guidance copy of a sample follows it (the rows of batched guidance,
and the calls of two-call guidance).

The network's file is a ``.safetensors`` with a JSON sidecar (``path.with_suffix(".json")``)
whose ``"config"`` is a :class:`DeciderConfig`; ``blockdance train-ada`` (blockdance-lab)
writes both. Its ``"kind"`` is ``"network"`` (:class:`DecisionNetwork`: three small
Transformer blocks and an MLP, designed here, docs/ada.md) or ``"static"``
(:class:`StaticSchedule`: learned per-step logits with no input, the same for every sample —
the Learning-to-Cache-style control). After a generation the policy exposes its decisions:
:attr:`StepMaskPolicy.cache_mask`, :attr:`StepMaskPolicy.probabilities` and
:attr:`StepMaskPolicy.reuse_steps_per_sample`.

The call order the policy relies on (docs/ada.md): ``begin`` checks the step count against
the network's; ``begin_call`` of each call before step ``ρ`` records the call's conditions
per guidance branch (two-call guidance brings the other branch's condition in another call);
``begin_call`` of the first call at step ``ρ`` decides for every sample from ``z_ρ`` (the
call's latent, first guidance copy) and the conditions of every copy (the batch's guidance
rows, and the branches recorded at step ``ρ - 1``); ``decide`` then looks the step's column
up. safetensors is read only through :func:`blockdance.checkpoint.read_weights`.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import Field
from torch import nn

from blockdance.checkpoint import load_checked, read_weights
from blockdance.errors import GenerationError, InvalidInputError, WeightsFileError
from blockdance.policies._common import require_two_blocks, resolve_boundary, round_half_up
from blockdance.policy import (
    Decision,
    GenerationInfo,
    ModelCall,
    Policy,
    PolicyConfig,
    SampleDecision,
    StepContext,
)

__all__ = [
    "ADA_ARCH",
    "AdaConfig",
    "AdaPolicy",
    "Decider",
    "DeciderConfig",
    "DecisionNetwork",
    "StaticSchedule",
    "StepMaskConfig",
    "StepMaskPolicy",
    "build_decider",
    "load_decider",
]

#: The ``"arch"`` every decision network's sidecar names.
ADA_ARCH = "blockdance-ada"
_REMEDY = "train one with `blockdance train-ada --workload NAME` (blockdance-lab)"


# ---------------------------------------------------------------------------------------------
# The decision network
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeciderConfig:
    """What builds a decision network: the sidecar's ``"config"``.

    Args:
        kind: ``"network"`` (:class:`DecisionNetwork`) or ``"static"`` (:class:`StaticSchedule`).
        num_steps: The step count ``s`` it was trained for; other step counts are refused.
        first_step: ``ρ``: the first step it decides (``s - ρ`` logits).
        copies: Condition copies per sample it was trained with (2 under classifier-free
            guidance: conditional and null); a generation giving another count is refused.
            None: not checked.
        condition: ``"classes"`` (integer labels, an ``nn.Embedding``), ``"vector"`` (a
            ``(D,)`` vector per sample, e.g. SD3's pooled text, an ``nn.Linear``) or
            ``"none"``.
        condition_size: Embedding rows (classes, null class included) or the vector's size.
        in_channels: Latent channels.
        input_size: Latent ``(H, W)``.
        patch_size: Side of the square patches the latent is cut into (tokens).
        dim: Token width.
        depth: Transformer blocks.
        heads: Attention heads.
        mlp_ratio: Hidden width of each block's MLP, in multiples of ``dim``.
    """

    kind: Literal["network", "static"]
    num_steps: int
    first_step: int
    copies: int | None = None
    condition: Literal["classes", "vector", "none"] = "none"
    condition_size: int = 0
    in_channels: int = 0
    input_size: tuple[int, int] = (0, 0)
    patch_size: int = 1
    dim: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0

    @property
    def decided_steps(self) -> int:
        """Logits per sample: ``s - ρ``."""
        return self.num_steps - self.first_step

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``"config"`` (a static schedule's without the network's entries)."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        if self.kind == "static":
            return {k: out[k] for k in ("kind", "num_steps", "first_step", "copies")}
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> DeciderConfig:
        """Validate a sidecar's ``"config"``; errors name ``where`` and the entry.

        Raises:
            WeightsFileError: Unknown or missing entries, or values out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise WeightsFileError(
                f"the 'config' in {where} has unknown entries {unknown}; a decision network's "
                f"config has {sorted(known)}; {_REMEDY}"
            )
        missing = [k for k in ("kind", "num_steps", "first_step") if k not in raw]
        if missing:
            raise WeightsFileError(f"the 'config' in {where} lacks {missing}; {_REMEDY}")
        values = dict(raw)
        if "input_size" in values:
            values["input_size"] = tuple(values["input_size"])
        cfg = cls(**values)
        problems = []
        if cfg.kind not in ("network", "static"):
            problems.append(f"kind {cfg.kind!r} is not 'network' or 'static'")
        if not 0 < cfg.first_step < cfg.num_steps:
            problems.append(
                f"first_step={cfg.first_step} is not in 1..num_steps-1 (num_steps={cfg.num_steps})"
            )
        if cfg.kind == "network":
            if cfg.condition not in ("classes", "vector", "none"):
                problems.append(f"condition {cfg.condition!r} is not classes, vector or none")
            if cfg.condition != "none" and cfg.condition_size < 1:
                problems.append(f"condition_size={cfg.condition_size} for {cfg.condition}")
            h, w = cfg.input_size
            p = cfg.patch_size
            if cfg.in_channels < 1 or p < 1 or h < p or w < p or h % p or w % p:
                problems.append(
                    f"latent {cfg.in_channels}x{h}x{w} cannot be cut into {p}x{p} patches"
                )
            if cfg.dim < 1 or cfg.heads < 1 or cfg.dim % cfg.heads:
                problems.append(f"dim={cfg.dim} is not a positive multiple of heads={cfg.heads}")
        if problems:
            raise WeightsFileError(
                f"the 'config' in {where} does not describe a decision network: "
                f"{'; '.join(problems)}; {_REMEDY}"
            )
        return cfg


class _Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]  # (n, T, D)
        return x + self.mlp(self.norm2(x))


def _condition_layer(cfg: DeciderConfig, width: int, bias: bool) -> nn.Module | None:
    if cfg.condition == "classes":
        return nn.Embedding(cfg.condition_size, width)
    if cfg.condition == "vector":
        return nn.Linear(cfg.condition_size, width, bias=bias)
    return None


class DecisionNetwork(nn.Module):
    """(z_ρ, condition copies) -> ``s - ρ`` cache-step logits per sample.

    The latent is cut into patches (tokens, with a learned position table); the condition
    copies of a sample are embedded and *summed*, so the order of guidance copies
    (conditional/null) does not matter, and the sum is prepended as a condition token. Three
    pre-norm Transformer blocks mix them; the condition token's output and the mean of the
    patch tokens feed an MLP giving the logits. A direct path adds per-condition logits (a
    schedule per class or linear in the pooled vector), zero at initialisation, so the
    network can learn a per-condition schedule before it learns to read the latent.

    Args:
        cfg: Its configuration (``kind="network"``).
    """

    def __init__(self, cfg: DeciderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p, (h, w) = cfg.dim, cfg.patch_size, cfg.input_size
        steps = cfg.decided_steps
        self.patch = nn.Conv2d(cfg.in_channels, d, kernel_size=p, stride=p)
        self.pos = nn.Parameter(torch.randn(1, (h // p) * (w // p), d) * 0.02)
        self.cond = _condition_layer(cfg, d, bias=True)
        self.cond_logits = _condition_layer(cfg, steps, bias=False)
        self.cond_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(_Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, steps))
        final = self.head[-1]
        assert isinstance(final, nn.Linear)
        nn.init.zeros_(final.weight)
        nn.init.zeros_(final.bias)
        if isinstance(self.cond_logits, nn.Embedding | nn.Linear):
            nn.init.zeros_(self.cond_logits.weight)

    def forward(self, latent: torch.Tensor, conditions: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(n, s - ρ)``.

        Args:
            latent: ``(n, C, H, W)`` the latent entering the model at step ``ρ``.
            conditions: ``(k, n)`` labels or ``(k, n, D)`` vectors, the ``k`` guidance copies
                of each sample's condition; None when the network takes none.
        """
        n = latent.shape[0]
        tokens = self.patch(latent.float()).flatten(2).transpose(1, 2) + self.pos  # (n, T, D)
        token = self.cond_token.expand(n, 1, -1)  # (n, 1, D)
        direct = None
        if self.cond is not None and self.cond_logits is not None:
            if conditions is None:
                raise InvalidInputError(
                    f"the decision network takes a {self.cfg.condition} condition and got none"
                )
            cond = conditions if self.cfg.condition == "classes" else conditions.float()
            token = token + self.cond(cond).sum(0)[:, None]  # sum over copies: (n, 1, D)
            direct = self.cond_logits(cond).sum(0)  # (n, s - ρ)
        x = torch.cat([token, tokens], dim=1)  # (n, 1 + T, D)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        logits = self.head(torch.cat([x[:, 0], x[:, 1:].mean(1)], dim=-1))  # (n, s - ρ)
        return logits if direct is None else logits + direct


class StaticSchedule(nn.Module):
    """The control: learned per-step logits, the same for every sample (no input).

    Args:
        cfg: Its configuration (``kind="static"``).
    """

    def __init__(self, cfg: DeciderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.logits = nn.Parameter(torch.zeros(cfg.decided_steps))

    def forward(self, latent: torch.Tensor, conditions: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(n, s - ρ)``, ``n`` from ``latent``'s first dimension."""
        return self.logits.expand(latent.shape[0], -1)


def build_decider(cfg: DeciderConfig) -> nn.Module:
    """A fresh decision network (or static schedule) for ``cfg``."""
    return DecisionNetwork(cfg) if cfg.kind == "network" else StaticSchedule(cfg)


@dataclass(frozen=True)
class Decider:
    """A loaded decision network.

    Args:
        network: The module, on the CPU, float32, eval mode.
        config: Its configuration.
        meta: The whole sidecar (recipe, seeds, training log …).
        path: The weights file.
    """

    network: nn.Module
    config: DeciderConfig
    meta: dict[str, Any]
    path: Path

    @property
    def num_bytes(self) -> int:
        """Bytes of its parameters and buffers."""
        tensors = [*self.network.parameters(), *self.network.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


def load_decider(path: str | Path) -> Decider:
    """Read a decision network written by ``blockdance train-ada``.

    Args:
        path: The ``.safetensors`` file; its sidecar is ``path.with_suffix(".json")``.

    Raises:
        WeightsFileNotFoundError: No weights or no sidecar (also a ``FileNotFoundError``).
        WeightsFileError: A truncated file, a sidecar that is not a decision network's.
        CheckpointMismatchError: The weights' keys or shapes do not fit the sidecar's config
            (the message lists them and names both files).
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    tensors, meta = read_weights(path, family="BlockDance-Ada decision network", remedy=_REMEDY)
    if meta.get("arch") != ADA_ARCH:
        raise WeightsFileError(
            f"{sidecar} names arch {meta.get('arch')!r}, not {ADA_ARCH!r}: it is not the sidecar "
            f"of a BlockDance-Ada decision network; {_REMEDY}"
        )
    try:
        cfg = DeciderConfig.from_dict(meta["config"], str(sidecar))
    except TypeError as e:
        raise WeightsFileError(f"the 'config' in {sidecar} is malformed ({e}); {_REMEDY}") from e
    network = build_decider(cfg)
    state = {k: v.float() for k, v in tensors.items()}
    load_checked(
        network,
        state,
        strict=True,
        hint=lambda _m, _f: (
            f"The weights {path} do not fit the {cfg.kind} its sidecar {sidecar} describes; "
            f"the two files come from different runs. {_REMEDY[0].upper()}{_REMEDY[1:]}."
        ),
        family=f"BlockDance-Ada ({path})",
    )
    return Decider(network.eval(), cfg, meta, path)


# ---------------------------------------------------------------------------------------------
# Policies that decide once per generation, per sample
# ---------------------------------------------------------------------------------------------
class StepMaskConfig(PolicyConfig):
    """Options of a policy that decides at step ρ which later steps each sample caches."""

    rho: float = Field(
        0.4,
        gt=0.0,
        lt=1.0,
        description="Share of the steps that compute fully before deciding: steps "
        "0..round(rho * s) - 1.",
    )
    boundary: int | None = Field(
        None,
        ge=0,
        description="Last reused block (blocks 0..boundary are reused on a reuse step); None: "
        "the architecture's default structural boundary.",
    )


SM = TypeVar("SM", bound=StepMaskConfig)


class StepMaskPolicy(Policy[SM]):
    """Steps ``0..ρ-1`` compute; at step ``ρ`` :meth:`choose` gives each sample's cache steps.

    A reuse step of a sample reuses blocks ``0..boundary`` (output reuse at the boundary):
    the sample's rows take the boundary state of its most recent cache step. Decisions are
    per sample (:data:`~blockdance.policy.SampleDecision`), shared by every guidance copy.

    Attributes:
        boundary: The last reused block (set by :meth:`begin`).
        first_step: ``ρ`` (set by :meth:`begin`).
        cache_mask: ``(n, s - ρ)`` bool on the CPU, True where a sample's step is a cache
            step (full compute); None until step ``ρ``. Kept after the generation ends.
        probabilities: ``(n, s - ρ)`` cache-step probabilities, when :meth:`choose` gives them.
    """

    sees_calls: ClassVar[bool] = True
    #: The step count the decisions are made for, when fixed (a trained network's); None: any.
    trained_steps: int | None = None

    def __init__(self, config: SM) -> None:
        super().__init__(config)
        self.boundary = -1
        self.first_step = 0
        self.offset = 0
        self.cache_mask: torch.Tensor | None = None
        self.probabilities: torch.Tensor | None = None
        self._columns: list[Decision | SampleDecision] = []
        self._conditions: dict[int, Any] = {}
        self._condition_step = -1

    @abstractmethod
    def choose(
        self, latent: torch.Tensor, conditions: torch.Tensor | None, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each sample's cache steps among ``ρ..s-1``.

        Args:
            latent: ``(n, ...)`` the latent entering the model at step ``ρ`` (one guidance
                copy per sample).
            conditions: ``(k, n, ...)`` the ``k`` guidance copies of each sample's condition
                (the batch's guidance rows, then the recorded branches), or None when the
                architecture declares no condition.
            ctx: The call's context.

        Returns:
            ``(n, s - ρ)`` bool, True for a cache step; and the probabilities, or None.
        """

    # -- generation ----------------------------------------------------------------------
    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        require_two_blocks(info, f"{self.name} reuses blocks 0..boundary and computes the rest")
        steps = self.require_num_steps(info)
        total = steps + info.schedule_offset
        if self.trained_steps is not None and total != self.trained_steps:
            raise InvalidInputError(
                f"policy {self.name!r} decides for generations of {self.trained_steps} steps "
                f"({self._source()}), and this generation has {total}"
                + (f" (schedule offset {info.schedule_offset})" if info.schedule_offset else "")
                + f". Generate with {self.trained_steps} steps, or train a network for {total} "
                "(blockdance train-ada --steps ...)."
            )
        first = round_half_up(self.config.rho * total)
        if not 0 < first < total:
            raise InvalidInputError(
                f"policy {self.name!r}: rho={self.config.rho} of {total} steps leaves "
                f"{first} step(s) before the decision; it needs 1..{total - 1}"
            )
        if info.schedule_offset > first:
            raise InvalidInputError(
                f"policy {self.name!r} decides at schedule step {first} from the latent "
                f"there, but this generation starts later, at step {info.schedule_offset} "
                "(img2img); it never sees that latent"
            )
        self.boundary = resolve_boundary(info, self.config.boundary, self.name)
        self.first_step, self.offset = first, info.schedule_offset
        self.cache_mask = self.probabilities = None
        self._columns = []
        self._conditions, self._condition_step = {}, -1

    def end(self) -> None:
        self._conditions = {}  # the decisions stay readable

    def _source(self) -> str:
        return "its trained network"

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.boundary})

    def begin_call(self, ctx: StepContext, call: ModelCall) -> None:
        step = ctx.step + self.offset
        if step < self.first_step:
            if step != self._condition_step:
                self._conditions, self._condition_step = {}, step
            self._conditions[ctx.branch] = call.condition
        elif step == self.first_step and self.cache_mask is None:
            self._decide_samples(ctx, call, step)

    def _decide_samples(self, ctx: StepContext, call: ModelCall, step: int) -> None:
        n = call.samples  # raises when the guidance batching is unknown
        latent = call.latent
        assert latent is not None  # call.samples read its batch
        recorded = self._conditions if self._condition_step == step - 1 else {}
        branches = dict(recorded) if recorded else {ctx.branch: call.condition}
        copies: list[torch.Tensor] = []
        for branch in sorted(branches):
            condition = branches[branch]
            if not isinstance(condition, torch.Tensor):
                copies = []
                break
            if condition.shape[0] % n:
                raise GenerationError(
                    f"policy {self.name!r}: the condition of branch {branch} has "
                    f"{condition.shape[0]} rows, not a multiple of the {n} samples"
                )
            copies.extend(condition.reshape(-1, n, *condition.shape[1:]).unbind(0))
        conditions = torch.stack(copies) if copies else None  # (k, n, ...)
        mask, probs = self.choose(latent[:n], conditions, ctx)
        assert self.info is not None and self.info.num_steps is not None  # checked at begin
        remaining = self.info.num_steps + self.offset - step
        if mask.dtype != torch.bool or tuple(mask.shape) != (n, remaining):
            raise GenerationError(
                f"policy {self.name!r} chose a cache mask of {mask.dtype} {tuple(mask.shape)}; "
                f"expected bool ({n}, {remaining})"
            )
        self.cache_mask = mask.detach().cpu()
        self.probabilities = None if probs is None else probs.detach().float().cpu()
        reuse = ~self.cache_mask
        self._columns = []
        for column in reuse.T:  # (n,) per step
            if not bool(column.any()):
                self._columns.append(Decision.COMPUTE)
            elif bool(column.all()):
                self._columns.append(Decision.REUSE)
            else:
                self._columns.append(column.clone().to(latent.device))
        self._conditions = {}

    def decide(self, ctx: StepContext, slot: int) -> Decision | SampleDecision:
        if slot > self.boundary:
            return Decision.COMPUTE
        column = ctx.step + self.offset - self.first_step
        if column < 0:
            return Decision.COMPUTE
        if self.cache_mask is None:
            raise GenerationError(
                f"policy {self.name!r} reached step {ctx.step + self.offset} without having "
                f"decided at step {self.first_step}: no model call was seen there"
            )
        return self._columns[column] if column < len(self._columns) else Decision.COMPUTE

    # -- what was decided ----------------------------------------------------------------
    @property
    def reuse_steps_per_sample(self) -> list[list[int]]:
        """For each sample, the steps (of the whole schedule) at which it reused blocks
        ``0..boundary``; empty lists before step ``ρ``."""
        if self.cache_mask is None:
            return []
        return [
            [self.first_step + int(i) for i in torch.nonzero(~row).reshape(-1)]
            for row in self.cache_mask
        ]

    @property
    def reuse_share_per_sample(self) -> list[float]:
        """For each sample, its share of reuse steps among steps ``ρ..s-1`` (C(u) of the paper)."""
        if self.cache_mask is None:
            return []
        return (~self.cache_mask).float().mean(1).tolist()

    def memory_bytes(self) -> int:
        held = [self.cache_mask, self.probabilities]
        held += [c for c in self._columns if isinstance(c, torch.Tensor)]
        held += [c for c in self._conditions.values() if isinstance(c, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in held if t is not None)


class AdaConfig(StepMaskConfig):
    """Configuration of the ``blockdance-ada`` policy."""

    kind: Literal["blockdance-ada"] = "blockdance-ada"
    weights: Path = Field(
        description="The decision network's .safetensors (its .json sidecar beside it), "
        "written by `blockdance train-ada`."
    )
    threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="A remaining step is a cache step (full compute) where the network's "
        "probability m >= threshold; below it the sample reuses blocks 0..boundary.",
    )


class AdaPolicy(StepMaskPolicy[AdaConfig]):
    """BlockDance-Ada: a trained network chooses each sample's cache steps at step ρ.

    Args:
        config: The configuration; the network is read here, so a bad file fails at attach.

    Attributes:
        decider: The loaded network, its config and its sidecar.
    """

    config_class = AdaConfig

    def __init__(self, config: AdaConfig) -> None:
        super().__init__(config)
        self.decider = load_decider(config.weights)
        cfg = self.decider.config
        self.trained_steps = cfg.num_steps
        first = round_half_up(config.rho * cfg.num_steps)
        if first != cfg.first_step:
            raise InvalidInputError(
                f"blockdance-ada rho={config.rho} decides at step {first} of {cfg.num_steps}, but "
                f"the network {config.weights} was trained to decide at step {cfg.first_step} "
                f"(rho={cfg.first_step / cfg.num_steps:g}); use that rho or retrain"
            )
        trained_boundary = self.decider.meta.get("boundary")
        self._trained_boundary = trained_boundary if isinstance(trained_boundary, int) else None

    def _source(self) -> str:
        return f"the network {self.config.weights} was trained for that count"

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        if self._trained_boundary is not None and self._trained_boundary != self.boundary:
            warnings.warn(
                f"blockdance-ada reuses blocks 0..{self.boundary}, but the network "
                f"{self.config.weights} was trained reusing 0..{self._trained_boundary}; its "
                "decisions were learned for the other boundary",
                RuntimeWarning,
                stacklevel=2,
            )

    def choose(
        self, latent: torch.Tensor, conditions: torch.Tensor | None, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        network = self.decider.network
        if self.decider.config.kind == "network":
            self._check_inputs(latent, conditions)
            network.to(latent.device)
        with torch.no_grad():
            cond = None if conditions is None else conditions.to(latent.device)
            logits = network(latent, cond)  # (n, s - ρ)
        probs = torch.sigmoid(logits.float())
        return probs >= self.config.threshold, probs

    def _check_inputs(self, latent: torch.Tensor, conditions: torch.Tensor | None) -> None:
        cfg, path = self.decider.config, self.config.weights
        expected = (cfg.in_channels, *cfg.input_size)
        if tuple(latent.shape[1:]) != expected:
            raise InvalidInputError(
                f"the decision network {path} reads latents of shape {expected}; this model's "
                f"latent is {tuple(latent.shape[1:])}. Use a network trained on this model."
            )
        if cfg.condition == "none":
            return
        if conditions is None:
            raise InvalidInputError(
                f"the decision network {path} reads a {cfg.condition} condition, but the model "
                "call carries none the policy can read (the architecture declares no "
                "condition=, or it is not a tensor)"
            )
        if cfg.copies is not None and conditions.shape[0] != cfg.copies:
            raise InvalidInputError(
                f"the decision network {path} was trained on {cfg.copies} condition copies per "
                f"sample (guidance copies: conditional and null), and this generation gives "
                f"{conditions.shape[0]} (guidance_batch x calls per step). Generate with the "
                "guidance it was trained with."
            )
        if cfg.condition == "classes":
            if conditions.dtype.is_floating_point or bool(
                ((conditions < 0) | (conditions >= cfg.condition_size)).any()
            ):
                raise InvalidInputError(
                    f"the decision network {path} embeds class labels 0..{cfg.condition_size - 1};"
                    f" got {conditions.dtype} values {sorted(set(conditions.reshape(-1).tolist()))}"
                )
        elif conditions.dim() != 3 or conditions.shape[-1] != cfg.condition_size:
            raise InvalidInputError(
                f"the decision network {path} reads condition vectors of size "
                f"{cfg.condition_size}; got copies of shape {tuple(conditions.shape[1:])}"
            )

    def memory_bytes(self) -> int:
        return super().memory_bytes() + self.decider.num_bytes
