"""blockdance: training-free acceleration of Diffusion Transformers by reusing
structural block features across adjacent denoising steps (BlockDance, CVPR 2025).

Quick use::

    import blockdance

    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        images = pipe(...).images
    print(handle.stats.summary())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from blockdance._attach import Handle, PolicyLike, attach
from blockdance._lazy import lazy
from blockdance._manager import (
    PluginLoadWarning,
    Registrations,
    Registry,
    default_registry,
    get_plugin_manager,
    load_policy_file,
    register_plugin,
    reload_plugins,
)
from blockdance.architecture import (
    ArchitectureExample,
    ArchitectureSpec,
    BlockIO,
    BlockSlot,
    State,
    call_argument,
    default_boundary,
    diffusers_class,
    diffusers_spec,
    imported_class,
    lazy_example,
    timestep_argument,
)
from blockdance.block_io import SignatureIO, TensorIO, block_argument
from blockdance.block_lists import (
    BlockList,
    InterleavedSpec,
    interleaved_blocks,
    module_list_blocks,
    module_lists_blocks,
)
from blockdance.errors import (
    AlreadyAttachedError,
    BlockDanceError,
    CheckpointMismatchError,
    GenerationError,
    InvalidInputError,
    NumStepsRequiredError,
    PluginClashError,
    PolicyFileError,
    PolicyFileNotFoundError,
    ReuseError,
    StaleCacheError,
    UnknownArchitectureError,
    UnknownModelError,
    UnknownPolicyError,
    WeightsFileError,
    WeightsFileNotFoundError,
)
from blockdance.hookspecs import hookimpl
from blockdance.observer import Observer
from blockdance.policies import BlockDanceConfig, NoneConfig, ScheduleConfig
from blockdance.policies.step_set import StepSetPolicy
from blockdance.policy import (
    FILE_OPTION,
    BlockCall,
    Decision,
    GenerationInfo,
    ModelCall,
    Policy,
    PolicyConfig,
    SampleDecision,
    SlotInfo,
    StepContext,
    file_options,
)
from blockdance.stats import CallRecord, GenerationStats

__version__ = "0.1.0"

__all__ = [
    "FILE_OPTION",
    "AlreadyAttachedError",
    "ArchitectureExample",
    "ArchitectureSpec",
    "BlockCall",
    "BlockDanceConfig",
    "BlockDanceError",
    "BlockIO",
    "BlockList",
    "BlockSlot",
    "CallRecord",
    "CheckpointMismatchError",
    "Decision",
    "GenerationError",
    "GenerationInfo",
    "GenerationStats",
    "Handle",
    "InterleavedSpec",
    "InvalidInputError",
    "ModelCall",
    "NoneConfig",
    "NumStepsRequiredError",
    "Observer",
    "PluginClashError",
    "PluginLoadWarning",
    "Policy",
    "PolicyConfig",
    "PolicyFileError",
    "PolicyFileNotFoundError",
    "PolicyLike",
    "Registrations",
    "Registry",
    "ReuseError",
    "SampleDecision",
    "ScheduleConfig",
    "SignatureIO",
    "SlotInfo",
    "StaleCacheError",
    "State",
    "StepContext",
    "StepSetPolicy",
    "TensorIO",
    "UnknownArchitectureError",
    "UnknownModelError",
    "UnknownPolicyError",
    "WeightsFileError",
    "WeightsFileNotFoundError",
    "__version__",
    "attach",
    "block_argument",
    "call_argument",
    "create_model",
    "default_boundary",
    "default_registry",
    "diffusers_class",
    "diffusers_spec",
    "file_options",
    "get_plugin_manager",
    "hookimpl",
    "imported_class",
    "interleaved_blocks",
    "lazy",
    "lazy_example",
    "list_architectures",
    "list_models",
    "list_policies",
    "load_policy_config",
    "module_list_blocks",
    "module_lists_blocks",
    "register_plugin",
    "reload_plugins",
    "timestep_argument",
]


def list_architectures() -> dict[str, str]:
    """Registered architectures: name -> one-line description."""
    return {name: spec.description for name, spec in default_registry().architectures.items()}


def list_policies() -> dict[str, type[PolicyConfig]]:
    """Registered policy kinds: name -> config class (its fields are the options)."""
    return {kind: cfg for kind, (cfg, _) in default_registry().policy_kinds.items()}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return default_registry().model_names


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model registered by a plugin, e.g. ``create_model("DiT-XL/2")``."""
    return default_registry().create_model(name, **kwargs)


def load_policy_config(path: str | Path) -> PolicyConfig:
    """Read and validate a policy configuration from a JSON file.

    Raises:
        PolicyFileError: The file is missing (also a ``FileNotFoundError``), not ``.json``,
            not valid JSON, or not a JSON object.
        pydantic.ValidationError: The options do not fit the kind, naming each bad field.
    """
    return default_registry().policy_config(load_policy_file(path))
