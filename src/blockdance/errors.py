"""Exceptions raised by blockdance; each message says what was expected and what to do."""

from __future__ import annotations


class BlockDanceError(Exception):
    """Base of blockdance's own errors."""


class PluginClashError(BlockDanceError):
    """Two plugins registered the same name."""


class UnknownArchitectureError(BlockDanceError, LookupError):
    """No registered architecture matches a model, or a name is not registered."""


class UnknownPolicyError(BlockDanceError, LookupError):
    """A policy kind is not registered."""


class UnknownModelError(BlockDanceError, LookupError):
    """A model factory name is not registered."""


class AlreadyAttachedError(BlockDanceError):
    """A model already has a blockdance runtime attached."""


class NumStepsRequiredError(BlockDanceError, ValueError):
    """A policy needs the number of inference steps and none is known."""


class StaleCacheError(BlockDanceError):
    """A cached state does not fit the current call (shape, dtype or device)."""


class ReuseError(BlockDanceError):
    """A policy asked for a reuse that the runtime cannot serve."""


class InvalidInputError(BlockDanceError, ValueError):
    """An argument or input file is not what blockdance expects; the message names both."""


class PolicyFileError(InvalidInputError):
    """A policy configuration file is missing, malformed, or in a format that is not read."""


class WeightsFileError(InvalidInputError):
    """A weights file or its JSON sidecar is missing, truncated or lacks what it must hold."""


class GenerationError(BlockDanceError):
    """A model call cannot be placed in a step or generation without guessing.

    Raised instead of misplacing reuse: e.g. a timestep that rises inside an explicit
    generation, or a model shared by threads in a way the runtime cannot keep apart.
    """


class PolicyFileNotFoundError(PolicyFileError, FileNotFoundError):
    """A policy configuration file does not exist (also a ``FileNotFoundError``)."""


class WeightsFileNotFoundError(WeightsFileError, FileNotFoundError):
    """A weights file or its JSON sidecar does not exist (also a ``FileNotFoundError``)."""
