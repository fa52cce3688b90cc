"""Other libraries' feature caches as external baselines for ``blockdance bench``.

diffusers ships its own feature caches as model hooks (``diffusers.hooks``), and cache-dit
(an optional extra, ``pip install 'blockdance-lab[peers]'``) hooks diffusers transformers
too. The bench runs them beside blockdance's policies on the same pipeline and seeds:

- ``diffusers:first-block-cache`` (``FirstBlockCacheConfig``): after the first block, compare
  its residual with the previous step's; below ``threshold`` (relative L1) the remaining
  blocks are skipped and their cached residual is added (ParaAttention's First Block Cache,
  after TeaCache, Liu et al. 2024).
- ``diffusers:pyramid-attention-broadcast`` (``PyramidAttentionBroadcastConfig``): inside a
  timestep range, the spatial attention outputs are recomputed every ``spatial_skip``-th call
  and broadcast in between (PAB, Zhao et al. 2024).
- ``diffusers:magcache`` (``MagCacheConfig``): skip every block while the accumulated error
  predicted by the magnitude ratios of consecutive output residuals stays below
  ``threshold`` (MagCache, Ma et al. 2025). The ratios are calibrated on the workload by
  :func:`blockdance_lab.magcache.calibrate_magcache` (``blockdance magcache-calibrate``).
- ``diffusers:fastercache`` (``FasterCacheConfig``): compute the unconditional half of a
  classifier-free-guidance batch only every ``uncond_skip``-th step (approximated from the
  conditional half's output in frequency space in between), and extrapolate the attention
  outputs of the skipped half (FasterCache, Lv et al. 2024).
- ``diffusers:taylorseer`` (``TaylorSeerCacheConfig``): the attention outputs (or, in
  ``lite`` mode, the whole block stack through ``proj_out``) are computed every
  ``cache_interval`` steps and forecast by a Taylor series in between (TaylorSeer, Liu et
  al. 2025).
- ``cache-dit:dbcache`` (cache-dit's DBCache): the first ``Fn`` and last ``Bn`` blocks always
  run; the middle ones are skipped while the first blocks' residual changes by less than
  ``residual_diff_threshold``; optionally the skipped residual is forecast by TaylorSeer.

They need a diffusers transformer whose blocks the library knows (e.g.
``SD3Transformer2DModel``; cache-dit is given the transformer's ``transformer_blocks``
through its ``BlockAdapter``). blockdance attaches its ``none`` policy around them, so the
step, the timestep the hooks ask for, the block calls and the latency are measured exactly as
for the other rows, and removes the hooks after each generation.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from torch import nn

__all__ = [
    "EXTERNAL_PREFIX",
    "EXTERNAL_PREFIXES",
    "PATH_FIELDS",
    "CacheDiTDBCacheBaseline",
    "ExternalCache",
    "FasterCacheBaseline",
    "FirstBlockCacheBaseline",
    "MagCacheBaseline",
    "PeerWork",
    "PyramidAttentionBroadcastBaseline",
    "TaylorSeerBaseline",
    "apply_external_cache",
    "count_work",
    "is_external",
    "parse_external",
    "read_mag_ratios",
    "resolve_paths",
]

#: Kinds with this prefix name a diffusers cache rather than a blockdance policy.
EXTERNAL_PREFIX = "diffusers:"
#: Every prefix of an external kind: diffusers' hooks and cache-dit.
EXTERNAL_PREFIXES = (EXTERNAL_PREFIX, "cache-dit:")
#: Options of external kinds that name a file; a bench file's relative paths resolve
#: against its folder (:func:`resolve_paths`).
PATH_FIELDS = ("ratios",)

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: ``remove()`` of an applied cache.
Remover = Callable[[], None]


class FirstBlockCacheBaseline(BaseModel):
    """diffusers' First Block Cache.

    Args:
        threshold: Relative L1 change of the first block's residual below which the other
            blocks are skipped (diffusers' examples use 0.05-0.2).
    """

    model_config = _FROZEN

    kind: Literal["diffusers:first-block-cache"] = "diffusers:first-block-cache"
    threshold: float = Field(0.05, gt=0)

    def hook_config(self, timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.threshold)

    def apply(self, transformer: nn.Module, timestep: Callable[[], float]) -> Remover:
        from diffusers.hooks import apply_first_block_cache

        return _apply_diffusers(apply_first_block_cache, transformer, self.hook_config(timestep))


class PyramidAttentionBroadcastBaseline(BaseModel):
    """diffusers' Pyramid Attention Broadcast on spatial (self-)attention.

    Args:
        spatial_skip: Recompute the attention every ``spatial_skip``-th call, broadcast the
            cached output in between.
        timestep_range: Broadcast only while ``low < timestep < high`` (diffusers' default
            100-800 on a 1000-step scale).
    """

    model_config = _FROZEN

    kind: Literal["diffusers:pyramid-attention-broadcast"] = "diffusers:pyramid-attention-broadcast"
    spatial_skip: int = Field(2, ge=2)
    timestep_range: tuple[int, int] = (100, 800)

    def hook_config(self, timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=self.spatial_skip,
            spatial_attention_timestep_skip_range=self.timestep_range,
            current_timestep_callback=cast("Callable[[], int]", timestep),
        )

    def apply(self, transformer: nn.Module, timestep: Callable[[], float]) -> Remover:
        from diffusers.hooks import apply_pyramid_attention_broadcast

        config = self.hook_config(timestep)
        return _apply_diffusers(apply_pyramid_attention_broadcast, transformer, config)


def read_mag_ratios(path: str | Path) -> tuple[list[float], dict[str, Any]]:
    """The magnitude ratios of a ratios file written by ``blockdance magcache-calibrate``.

    Returns:
        One ratio per model call of a generation, and the whole file (workload, steps,
        seeds, ...).

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The file holds no ``mag_ratios`` list of numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MagCache ratios file not found: {path}; write it with "
            f"`blockdance magcache-calibrate --workload NAME --out {path}`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"MagCache ratios file {path} is not valid JSON: {err.msg}") from None
    ratios = data.get("mag_ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, list) or not ratios:
        raise ValueError(f"{path} holds no 'mag_ratios' list; is it a MagCache ratios file?")
    if not all(isinstance(r, int | float) for r in ratios):
        raise ValueError(f"{path}: 'mag_ratios' must be numbers")
    return [float(r) for r in ratios], data


class MagCacheBaseline(BaseModel):
    """diffusers' MagCache, with magnitude ratios calibrated on the workload.

    Args:
        ratios: The ratios file (``blockdance magcache-calibrate --out FILE``); in a bench
            file a relative path is read relative to the bench file's folder. It fixes the
            number of model calls per generation the ratios were measured for.
        threshold: Accumulated error (sum of ``|1 - product of ratios|`` since the last
            computed step) up to which every block is skipped and the last residual reused.
        max_skip_steps: At most this many consecutive steps are skipped (K in the paper).
        retention_ratio: The first ``retention_ratio`` of the steps are always computed.
    """

    model_config = _FROZEN

    kind: Literal["diffusers:magcache"] = "diffusers:magcache"
    ratios: str
    threshold: float = Field(0.06, gt=0)
    max_skip_steps: int = Field(3, ge=1)
    retention_ratio: float = Field(0.2, ge=0, lt=1)

    @field_validator("ratios")
    @classmethod
    def _ratios_file_reads(cls, value: str) -> str:
        try:  # a missing or malformed file fails before anything runs
            read_mag_ratios(value)
        except FileNotFoundError as err:
            raise ValueError(str(err)) from None
        return value

    def hook_config(self, timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import MagCacheConfig

        ratios, _ = read_mag_ratios(self.ratios)
        return MagCacheConfig(
            threshold=self.threshold,
            max_skip_steps=self.max_skip_steps,
            retention_ratio=self.retention_ratio,
            num_inference_steps=len(ratios),
            mag_ratios=ratios,
        )

    def apply(self, transformer: nn.Module, timestep: Callable[[], float]) -> Remover:
        from diffusers.hooks import apply_mag_cache

        config = self.hook_config(timestep)
        remove = _apply_diffusers(apply_mag_cache, transformer, config)
        calls = [0]
        expected = config.num_inference_steps

        def count(module: nn.Module, args: Any) -> None:
            calls[0] += 1
            if calls[0] > expected:
                raise ValueError(
                    f"the ratios in {self.ratios} were calibrated for {expected} model calls "
                    "per generation, and this generation makes more: calibrate for this "
                    "step count (blockdance magcache-calibrate --steps)"
                )

        hook = transformer.register_forward_pre_hook(count)

        def remove_all() -> None:
            hook.remove()
            remove()
            if 0 < calls[0] < expected:
                raise ValueError(
                    f"the ratios in {self.ratios} were calibrated for {expected} model calls "
                    f"per generation, and this generation made {calls[0]}: calibrate for this "
                    "step count (blockdance magcache-calibrate --steps)"
                )

        return remove_all


class FasterCacheBaseline(BaseModel):
    """diffusers' FasterCache: unconditional-branch skipping and attention extrapolation.

    For a model called once per step on a ``[unconditional, conditional]`` batch (the
    pipelines' classifier-free guidance, as the tiny SD3 sampler does).

    Args:
        uncond_skip: Compute the unconditional half every ``uncond_skip``-th step; in
            between, only the conditional half runs and the unconditional output is
            approximated from it (its low- and high-frequency offsets to the conditional
            output, measured at the last full step).
        uncond_timestep_range: Skip the unconditional half only while
            ``low < timestep < high`` (diffusers' default ``(-1, 641)``).
        spatial_skip: While the unconditional half is skipped, the attention output is
            computed every ``spatial_skip``-th call and extrapolated from the last two
            computed ones in between.
        spatial_timestep_range: ... only while ``low < timestep < high``.
        attention_weight: Weight of the extrapolation, ``out_t + (out_t - out_t-2) * w``.
        alpha_low_frequency: Scale of the low-frequency offset (Eq. 11 of the paper),
            applied while the timestep is inside ``low_frequency_timestep_range``.
        alpha_high_frequency: Scale of the high-frequency offset, inside
            ``high_frequency_timestep_range``.
        tensor_format: Layout of the model output (``BCHW`` for images).
        uncond_cond_inputs: The keyword arguments of the model call that hold the batched
            unconditional and conditional halves (SD3's ``pooled_projections`` included).
    """

    model_config = _FROZEN

    kind: Literal["diffusers:fastercache"] = "diffusers:fastercache"
    uncond_skip: int = Field(2, ge=1)
    uncond_timestep_range: tuple[int, int] = (-1, 641)
    spatial_skip: int = Field(2, ge=1)
    spatial_timestep_range: tuple[int, int] = (-1, 681)
    attention_weight: float = 0.5
    alpha_low_frequency: float = 1.1
    alpha_high_frequency: float = 1.1
    low_frequency_timestep_range: tuple[int, int] = (99, 901)
    high_frequency_timestep_range: tuple[int, int] = (-1, 301)
    tensor_format: Literal["BCHW", "BCFHW", "BFCHW"] = "BCHW"
    uncond_cond_inputs: tuple[str, ...] = (
        "hidden_states",
        "encoder_hidden_states",
        "pooled_projections",
        "timestep",
        "attention_mask",
        "encoder_attention_mask",
    )

    def hook_config(self, timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import FasterCacheConfig

        weight = self.attention_weight
        return FasterCacheConfig(
            spatial_attention_block_skip_range=self.spatial_skip,
            spatial_attention_timestep_skip_range=self.spatial_timestep_range,
            low_frequency_weight_update_timestep_range=self.low_frequency_timestep_range,
            high_frequency_weight_update_timestep_range=self.high_frequency_timestep_range,
            alpha_low_frequency=self.alpha_low_frequency,
            alpha_high_frequency=self.alpha_high_frequency,
            unconditional_batch_skip_range=self.uncond_skip,
            unconditional_batch_timestep_skip_range=self.uncond_timestep_range,
            attention_weight_callback=lambda _: weight,
            tensor_format=self.tensor_format,
            current_timestep_callback=cast("Callable[[], int]", timestep),
            _unconditional_conditional_input_kwargs_identifiers=list(self.uncond_cond_inputs),
        )

    def apply(self, transformer: nn.Module, timestep: Callable[[], float]) -> Remover:
        from diffusers.hooks import apply_faster_cache

        with _quiet("diffusers.hooks.faster_cache"):  # "purely experimental", every time
            return _apply_diffusers(apply_faster_cache, transformer, self.hook_config(timestep))


class TaylorSeerBaseline(BaseModel):
    """diffusers' TaylorSeer cache.

    Args:
        cache_interval: Compute every ``cache_interval`` steps; forecast in between.
        disable_cache_before_step: Compute every step before this one (the forecast's
            differences are gathered there).
        disable_cache_after_step: Compute every step from this one on (None: never).
        max_order: Order of the Taylor series (finite differences of the computed steps).
        lite: diffusers' lite mode: every block is skipped on forecast steps (returns zeros)
            and only ``proj_out``'s output is forecast; otherwise the attention outputs are
            forecast and the rest of every block runs.
        factors_dtype: Precision of the stored Taylor factors (diffusers' default is
            bfloat16).
    """

    model_config = _FROZEN

    kind: Literal["diffusers:taylorseer"] = "diffusers:taylorseer"
    cache_interval: int = Field(5, ge=1)
    disable_cache_before_step: int = Field(3, ge=0)
    disable_cache_after_step: int | None = Field(None, ge=0)
    max_order: int = Field(1, ge=0, le=4)
    lite: bool = False
    factors_dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def hook_config(self, timestep: Callable[[], float]) -> Any:
        import torch
        from diffusers.hooks import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(
            cache_interval=self.cache_interval,
            disable_cache_before_step=self.disable_cache_before_step,
            disable_cache_after_step=self.disable_cache_after_step,
            max_order=self.max_order,
            taylor_factors_dtype=getattr(torch, self.factors_dtype),
            use_lite_mode=self.lite,
        )

    def apply(self, transformer: nn.Module, timestep: Callable[[], float]) -> Remover:
        from diffusers.hooks import apply_taylorseer_cache

        return _apply_diffusers(apply_taylorseer_cache, transformer, self.hook_config(timestep))


class CacheDiTDBCacheBaseline(BaseModel):
    """cache-dit's DBCache (Dual Block Cache), optionally with its TaylorSeer calibrator.

    Needs the optional extra: ``pip install 'blockdance-lab[peers]'`` (cache-dit).

    Args:
        Fn: The first ``Fn`` blocks run at every step; their output residual's relative
            change decides whether the middle blocks run.
        Bn: The last ``Bn`` blocks run at every step too.
        residual_diff_threshold: Relative L1 change of the first blocks' residual below
            which the middle blocks are skipped and their cached residual added.
        max_warmup_steps: The first steps always compute everything.
        max_cached_steps: At most this many steps are skipped in a generation (-1: no limit).
        max_continuous_cached_steps: At most this many consecutive steps are skipped (-1: no
            limit).
        taylorseer: Forecast the skipped residual with TaylorSeer instead of reusing it.
        taylorseer_order: The forecast's order.
        encoder_taylorseer: Forecast the text stream's residual too (cache-dit's default).
            It fails on SD3, whose last block returns no text stream.
    """

    model_config = _FROZEN

    kind: Literal["cache-dit:dbcache"] = "cache-dit:dbcache"
    Fn: int = Field(1, ge=0)  # cache-dit's names
    Bn: int = Field(0, ge=0)
    residual_diff_threshold: float = Field(0.08, gt=0)
    max_warmup_steps: int = Field(8, ge=0)
    max_cached_steps: int = Field(-1, ge=-1)
    max_continuous_cached_steps: int = Field(-1, ge=-1)
    taylorseer: bool = False
    taylorseer_order: int = Field(1, ge=1, le=4)
    encoder_taylorseer: bool = True

    @field_validator("kind")
    @classmethod
    def _installed(cls, value: str) -> str:
        if importlib.util.find_spec("cache_dit") is None:
            raise ValueError(
                "cache-dit is not installed: pip install 'blockdance-lab[peers]' "
                "(or pip install cache-dit)"
            )
        return value

    def apply(self, transformer: nn.Module, timestep: Callable[[], float]) -> Remover:
        import cache_dit

        blocks = getattr(transformer, "transformer_blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            raise TypeError(
                f"{type(transformer).__name__} has no `transformer_blocks` list to give "
                "cache-dit's BlockAdapter"
            )
        config = cache_dit.DBCacheConfig(
            Fn_compute_blocks=self.Fn,
            Bn_compute_blocks=self.Bn,
            residual_diff_threshold=self.residual_diff_threshold,
            max_warmup_steps=self.max_warmup_steps,
            max_cached_steps=self.max_cached_steps,
            max_continuous_cached_steps=self.max_continuous_cached_steps,
            enable_separate_cfg=False,  # one call per step on the batched CFG halves
        )
        calibrator = (
            cache_dit.TaylorSeerCalibratorConfig(
                taylorseer_order=self.taylorseer_order,
                enable_encoder_calibrator=self.encoder_taylorseer,
            )
            if self.taylorseer
            else None
        )
        # cache-dit rebinds the forward it found on disable; keep blockdance's own wrapper
        forward = vars(transformer).get("forward")
        with _quiet("cache_dit"):
            adapter = cache_dit.BlockAdapter(
                transformer=transformer,
                blocks=blocks,
                # SD3's joint blocks: (hidden, text) -> (text, hidden)
                forward_pattern=cache_dit.ForwardPattern.Pattern_1,
                check_forward_pattern=True,
            )
            try:
                cache_dit.enable_cache(adapter, cache_config=config, calibrator_config=calibrator)
            except Exception:
                _disable_cache_dit(adapter, transformer, forward)
                raise

        def remove() -> None:
            _disable_cache_dit(adapter, transformer, forward)

        return remove


def _disable_cache_dit(adapter: Any, transformer: nn.Module, forward: Any) -> None:
    import cache_dit

    with _quiet("cache_dit"):
        try:
            cache_dit.disable_cache(adapter)
        finally:
            if forward is None:
                vars(transformer).pop("forward", None)
            else:
                transformer.forward = forward


@contextmanager
def _quiet(prefix: str) -> Iterator[None]:
    """Loggers under ``prefix`` say only errors inside the block (cache-dit logs each
    enable and disable at INFO and WARNING)."""
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == prefix or name.startswith(prefix + ".")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


#: Any external cache configuration.
ExternalCache = (
    FirstBlockCacheBaseline
    | PyramidAttentionBroadcastBaseline
    | MagCacheBaseline
    | FasterCacheBaseline
    | TaylorSeerBaseline
    | CacheDiTDBCacheBaseline
)
_ADAPTER: TypeAdapter[ExternalCache] = TypeAdapter(
    Annotated[ExternalCache, Field(discriminator="kind")]
)


def is_external(entry: object) -> bool:
    """True when a bench entry (kind name or mapping) names an external cache."""
    if isinstance(entry, ExternalCache):
        return True
    kind = entry.get("kind") if isinstance(entry, Mapping) else entry
    return isinstance(kind, str) and kind.startswith(EXTERNAL_PREFIXES)


def parse_external(entry: str | Mapping[str, Any] | ExternalCache) -> ExternalCache:
    """Validate a bench entry as an external cache config (pydantic field errors on bad input).

    Args:
        entry: ``"diffusers:first-block-cache"``, a mapping with ``kind`` and options, or
            a config already.
    """
    if isinstance(entry, ExternalCache):
        return entry
    data = {"kind": entry} if isinstance(entry, str) else dict(entry)
    return _ADAPTER.validate_python(data)


def resolve_paths(entry: Any, folder: Path) -> Any:
    """A bench-file entry with the relative file options of an external cache
    (:data:`PATH_FIELDS`, e.g. MagCache's ``ratios``) joined to ``folder``, the bench file's
    folder; any other entry as it is."""
    if not (isinstance(entry, Mapping) and is_external(entry)):
        return entry
    return join_relative(entry, PATH_FIELDS, folder)


def join_relative(entry: Mapping[str, Any], keys: Iterable[str], folder: Path) -> dict[str, Any]:
    """``entry`` with each relative path string under ``keys`` joined to ``folder``."""
    out = dict(entry)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            out[key] = str(folder / value)
    return out


def _apply_diffusers(
    apply: Callable[[nn.Module, Any], None], model: nn.Module, cfg: Any
) -> Remover:
    """``apply(model, cfg)``, and a remover of every diffusers cache hook on ``model``.

    Raises:
        TypeError: diffusers hooked no block or attention inside ``model`` (it warns and
            hooks nothing on a model whose layers it does not know).
    """
    from diffusers.hooks import HookRegistry

    try:
        apply(model, cfg)
    finally:
        HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
    names = _diffusers_hook_names()
    inner: list[Any] = [getattr(m, "_diffusers_hook", None) for m in list(model.modules())[1:]]
    if not any(r is not None and any(r.get_hook(n) for n in names) for r in inner):
        _remove_diffusers_hooks(model)
        raise TypeError("diffusers found no block or attention layer it knows to hook")
    return lambda: _remove_diffusers_hooks(model)


def _diffusers_hook_names() -> tuple[str, ...]:
    from diffusers.hooks.faster_cache import _FASTER_CACHE_BLOCK_HOOK, _FASTER_CACHE_DENOISER_HOOK
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    return (
        _FBC_LEADER_BLOCK_HOOK,
        _FBC_BLOCK_HOOK,
        _PYRAMID_ATTENTION_BROADCAST_HOOK,
        _MAG_CACHE_LEADER_BLOCK_HOOK,
        _MAG_CACHE_BLOCK_HOOK,
        _FASTER_CACHE_DENOISER_HOOK,
        _FASTER_CACHE_BLOCK_HOOK,
        _TAYLORSEER_CACHE_HOOK,
    )


@contextmanager
def apply_external_cache(
    config: ExternalCache,
    transformer: nn.Module,
    timestep: Callable[[], float],
) -> Iterator[None]:
    """Apply an external cache to ``transformer`` for the duration of the block.

    Args:
        config: Which cache, with its options.
        transformer: A diffusers transformer.
        timestep: The current denoising timestep (for the hooks' timestep ranges).

    Raises:
        TypeError: The library cannot apply the cache to this model.
        RuntimeError: The cache failed while the model ran (or while it was removed); the
            message ends with the library's own error, ``Type: message``.
    """
    from diffusers.models.cache_utils import CacheMixin

    name = type(transformer).__name__
    try:
        remove = config.apply(transformer, timestep)
    except Exception as err:
        _remove_all(transformer)
        raise TypeError(
            f"{_library(config)} cannot apply {config.kind!r} to {name}: "
            f"{type(err).__name__}: {err}. External caches need a diffusers transformer whose "
            "blocks the library knows (e.g. SD3Transformer2DModel, FluxTransformer2DModel)."
        ) from err
    try:
        with ExitStack() as stack:
            stack.callback(remove)
            if config.kind.startswith(EXTERNAL_PREFIX):
                # diffusers' hooks keep state per named context; one spans the generation
                context = CacheMixin.cache_context(transformer, "blockdance-bench")  # type: ignore[arg-type]
                stack.enter_context(context)
            yield
    except Exception as err:
        _remove_all(transformer)
        raise RuntimeError(
            f"{config.kind!r} failed on {name}: {type(err).__name__}: {err}"
        ) from err


def _library(config: ExternalCache) -> str:
    return config.kind.split(":", 1)[0]


def _remove_all(model: nn.Module) -> None:
    """Take every diffusers cache hook off ``model`` (a failed apply or run may leave some)."""
    with contextlib.suppress(Exception):  # best effort: an error is being raised
        _remove_diffusers_hooks(model)


def _remove_diffusers_hooks(model: nn.Module) -> None:
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(model)
    for hook in _diffusers_hook_names():
        registry.remove_hook(hook, recurse=True)
    registry.invalidate_child_registries_cache()


# --- what ran: blocks and attentions, in batch rows ------------------------------------------


@dataclass
class PeerWork:
    """Batch rows a generation ran through the blocks and the attentions, counted by
    :func:`count_work`.

    A peer that skips whole blocks lowers ``block_rows``; FasterCache's unconditional-branch
    skipping runs every block on half the batch, which lowers it too; PAB, FasterCache's
    attention extrapolation and TaylorSeer's forecast lower ``attention_rows`` only.

    Args:
        blocks: Blocks counted.
        attentions: Attention modules counted.
        model_rows: Batch rows of the model calls (the whole guidance batch).
        block_rows: Batch rows of the block calls that computed.
        attention_rows: Batch rows of the attention calls that computed.
    """

    blocks: int
    attentions: int
    model_rows: int = 0
    block_rows: int = 0
    attention_rows: int = 0

    @property
    def blocks_skipped(self) -> float:
        """Share of the block work skipped (batch rows; 0 for a full generation)."""
        return 1.0 - self.block_rows / max(1, self.model_rows * self.blocks)

    @property
    def attention_skipped(self) -> float:
        """Share of the attention work skipped (batch rows; 0 for a full generation)."""
        return 1.0 - self.attention_rows / max(1, self.model_rows * self.attentions)


@contextmanager
def count_work(
    transformer: nn.Module, blocks: Sequence[nn.Module] | None = None
) -> Iterator[PeerWork]:
    """Count the batch rows that ``transformer``'s blocks and attentions compute.

    A block counts when its first submodule runs (its first norm), an attention when its
    query projection ``to_q`` runs: a cache that skips them never calls their ``forward``,
    so these hooks see only the work that was done, whichever library skipped it.

    Args:
        transformer: A diffusers transformer (attentions with ``to_q``).
        blocks: The blocks (default: ``transformer.transformer_blocks``).
    """
    blocks = list(transformer.transformer_blocks if blocks is None else blocks)  # type: ignore[arg-type]
    queries: list[nn.Module] = [
        q for m in transformer.modules() if isinstance(q := getattr(m, "to_q", None), nn.Module)
    ]
    work = PeerWork(blocks=len(blocks), attentions=len(queries))

    def rows(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        x = kwargs.get("hidden_states", args[0] if args else None)
        return int(x.shape[0]) if x is not None else 0

    def on_model(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        work.model_rows += rows(args, kwargs)

    def on_block(module: nn.Module, args: tuple[Any, ...]) -> None:
        work.block_rows += int(args[0].shape[0])

    def on_attention(module: nn.Module, args: tuple[Any, ...]) -> None:
        work.attention_rows += int(args[0].shape[0])

    handles = [transformer.register_forward_pre_hook(on_model, with_kwargs=True)]
    handles += [next(iter(b.children())).register_forward_pre_hook(on_block) for b in blocks]
    handles += [q.register_forward_pre_hook(on_attention) for q in queries]
    try:
        yield work
    finally:
        for handle in handles:
            handle.remove()
