"""Exceptions raised by blockdance; each message says what was expected and what to do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: How many items a message lists before it counts the rest.
_MAX_LISTED = 10


def listing(items: Sequence[str], sep: str = ", ") -> str:
    """The first few items joined by ``sep``, then a count of the rest."""
    rest = len(items) - _MAX_LISTED
    return sep.join([*items[:_MAX_LISTED], *([f"... and {rest} more"] if rest > 0 else [])])


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


class CheckpointMismatchError(BlockDanceError, ValueError):
    """A state dict whose keys or shapes do not fit the model it is loaded into.

    Args:
        missing_keys: Keys the model has and the checkpoint lacks (kept as an attribute).
        unexpected_keys: Keys the checkpoint has and the model lacks (kept).
        shape_mismatches: ``key -> (model shape, checkpoint shape)`` (kept).
        hint: What the checkpoint looks like and what to do, appended to the message.
        family: Model family named in the message, e.g. ``"DiT"``.
    """

    def __init__(
        self,
        missing_keys: list[str],
        unexpected_keys: list[str],
        shape_mismatches: Mapping[str, tuple[Sequence[int], Sequence[int]]],
        hint: str = "",
        family: str = "",
    ) -> None:
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.shape_mismatches = shape_mismatches
        lines = [f"{family} checkpoint does not match the model.".lstrip()]
        if missing_keys:
            lines.append(f"  missing keys ({len(missing_keys)}):{_bullets(missing_keys)}")
        if unexpected_keys:
            lines.append(f"  unexpected keys ({len(unexpected_keys)}):{_bullets(unexpected_keys)}")
        if shape_mismatches:
            shapes = [
                f"{key}: model {tuple(want)} vs checkpoint {tuple(got)}"
                for key, (want, got) in shape_mismatches.items()
            ]
            lines.append(f"  shape mismatches ({len(shapes)}):{_bullets(shapes)}")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def _bullets(items: list[str]) -> str:
    return "\n    " + listing(items, sep="\n    ")


class GenerationError(BlockDanceError):
    """A model call cannot be placed in a step or generation without guessing.

    Raised instead of misplacing reuse: e.g. a timestep that rises inside an explicit
    generation, or a model shared by threads in a way the runtime cannot keep apart.
    """


class PolicyFileNotFoundError(PolicyFileError, FileNotFoundError):
    """A policy configuration file does not exist (also a ``FileNotFoundError``)."""


class WeightsFileNotFoundError(WeightsFileError, FileNotFoundError):
    """A weights file or its JSON sidecar does not exist (also a ``FileNotFoundError``)."""
