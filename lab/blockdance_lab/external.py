"""diffusers' built-in caches as external baselines for ``blockdance bench``.

diffusers ships its own feature caches as model hooks (``diffusers.hooks``). The bench runs
two of them beside blockdance's policies on the same pipeline and seeds:

- ``diffusers:first-block-cache`` (``FirstBlockCacheConfig``): after the first block, compare
  its residual with the previous step's; below ``threshold`` (relative L1) the remaining
  blocks are skipped and their cached residual is added (ParaAttention's First Block Cache,
  after TeaCache, Liu et al. 2024).
- ``diffusers:pyramid-attention-broadcast`` (``PyramidAttentionBroadcastConfig``): inside a
  timestep range, the spatial attention outputs are recomputed every ``spatial_skip``-th call
  and broadcast in between (PAB, Zhao et al. 2024).

They need a diffusers transformer whose blocks diffusers knows (e.g. ``SD3Transformer2DModel``,
``FluxTransformer2DModel``, ``LatteTransformer3DModel``). blockdance attaches its ``none`` policy
around them, so the step, the timestep PAB asks for and the latency are measured exactly as
for the other rows, and removes the hooks after each generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from torch import nn

__all__ = [
    "EXTERNAL_PREFIX",
    "ExternalCache",
    "FirstBlockCacheBaseline",
    "PyramidAttentionBroadcastBaseline",
    "apply_external_cache",
    "is_external",
    "parse_external",
]

#: Kinds with this prefix name an external (diffusers) cache rather than a blockdance policy.
EXTERNAL_PREFIX = "diffusers:"


class FirstBlockCacheBaseline(BaseModel):
    """diffusers' First Block Cache.

    Args:
        threshold: Relative L1 change of the first block's residual below which the other
            blocks are skipped (diffusers' examples use 0.05-0.2).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["diffusers:first-block-cache"] = "diffusers:first-block-cache"
    threshold: float = Field(0.05, gt=0)

    def hook_config(self, timestep: Callable[[], float]) -> Any:
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.threshold)


class PyramidAttentionBroadcastBaseline(BaseModel):
    """diffusers' Pyramid Attention Broadcast on spatial (self-)attention.

    Args:
        spatial_skip: Recompute the attention every ``spatial_skip``-th call, broadcast the
            cached output in between.
        timestep_range: Broadcast only while ``low < timestep < high`` (diffusers' default
            100-800 on a 1000-step scale).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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


#: Any external cache configuration.
ExternalCache = FirstBlockCacheBaseline | PyramidAttentionBroadcastBaseline
_ADAPTER: TypeAdapter[ExternalCache] = TypeAdapter(
    Annotated[ExternalCache, Field(discriminator="kind")]
)


def is_external(entry: object) -> bool:
    """True when a bench entry (kind name or mapping) names a diffusers cache."""
    if isinstance(entry, ExternalCache):
        return True
    kind = entry.get("kind") if isinstance(entry, Mapping) else entry
    return isinstance(kind, str) and kind.startswith(EXTERNAL_PREFIX)


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


@contextmanager
def apply_external_cache(
    config: ExternalCache,
    transformer: nn.Module,
    timestep: Callable[[], float],
) -> Iterator[None]:
    """Apply a diffusers cache to ``transformer`` for the duration of the block.

    Args:
        config: Which cache, with its options.
        transformer: A diffusers transformer.
        timestep: The current denoising timestep (for PAB's timestep range).

    Raises:
        TypeError: diffusers cannot apply the cache to this model.
    """
    from diffusers.hooks import HookRegistry, apply_first_block_cache
    from diffusers.hooks import apply_pyramid_attention_broadcast as apply_pab
    from diffusers.models.cache_utils import CacheMixin

    hook_config = config.hook_config(timestep)
    apply = apply_first_block_cache if isinstance(config, FirstBlockCacheBaseline) else apply_pab
    try:
        apply(transformer, hook_config)
    except Exception as err:
        _remove_hooks(HookRegistry.check_if_exists_or_initialize(transformer))
        raise TypeError(
            f"diffusers cannot apply {config.kind!r} to {type(transformer).__name__}: {err}. "
            "External caches need a diffusers transformer whose blocks diffusers knows "
            "(e.g. SD3Transformer2DModel, FluxTransformer2DModel, LatteTransformer3DModel)."
        ) from err
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.invalidate_child_registries_cache()  # new block hooks: rebuild the context list
    try:
        # the hooks keep state per named context; one context spans the whole generation
        with CacheMixin.cache_context(transformer, "blockdance-bench"):  # type: ignore[arg-type]
            yield
    except Exception as err:
        raise RuntimeError(
            f"diffusers' {config.kind!r} failed on {type(transformer).__name__}: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        _remove_hooks(registry)


def _remove_hooks(registry: Any) -> None:
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    for name in (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK, _PYRAMID_ATTENTION_BROADCAST_HOOK):
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()
