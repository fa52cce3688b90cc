"""Step-set policies: reuse blocks ``0..boundary`` on a set of steps, cache on another.

BlockDance, the ``random`` control and the policy tutorial's ``every-k`` are all this shape;
they differ only in *which* steps reuse and which steps' boundary outputs are kept.
Subclass :class:`StepSetPolicy`, implement :meth:`~StepSetPolicy.plan_steps`, and the
boundary resolution, ``decide``, ``keep`` and ``boundaries`` come from the base::

    class EveryOtherPolicy(StepSetPolicy[EveryOtherConfig]):
        config_class = EveryOtherConfig

        def plan_steps(self, info, num_steps):
            return None, frozenset(range(1, num_steps, 2))
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, TypeVar

from blockdance.policies._common import resolve_boundary, window_steps
from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext

__all__ = ["StepSetPolicy", "window_steps"]

C = TypeVar("C", bound=PolicyConfig)


class StepSetPolicy(Policy[C]):
    """Reuse blocks ``0..boundary`` on ``reuse_steps``; keep the boundary's output on
    ``cache_steps``.

    :meth:`begin` asks for the step count (the sets are built from it), resolves the
    boundary (:meth:`resolve_boundary`), then calls :meth:`plan_steps`. The boundary block is
    the one reuse boundary: a reuse step substitutes its cached output and skips blocks
    ``0..boundary``.

    Attributes:
        boundary: The last reused block (set by :meth:`begin`).
        cache_steps: Steps whose boundary output is kept; None keeps every computed output
            (the latest replaces the previous).
        reuse_steps: Steps that reuse blocks ``0..boundary``.
    """

    #: True when at least one deep block must follow the boundary (BlockDance-style policies:
    #: the structural blocks are reused, the deep ones always compute).
    needs_deep_block: ClassVar[bool] = False

    def __init__(self, config: C) -> None:
        super().__init__(config)
        self.boundary = -1
        self.cache_steps: frozenset[int] | None = None
        self.reuse_steps: frozenset[int] = frozenset()

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        num_steps = self.require_num_steps(info)
        self.boundary = self.resolve_boundary(info)
        self.cache_steps, self.reuse_steps = self.plan_steps(info, num_steps)

    def resolve_boundary(self, info: GenerationInfo) -> int:
        """The last reused block: the config's ``boundary`` when it has one and it is not
        None, else the architecture's default; out of the model's range is an error.

        Override to add checks (call ``super().resolve_boundary(info)`` first).
        """
        configured: int | None = getattr(self.config, "boundary", None)
        return resolve_boundary(info, configured, self.name, deep=self.needs_deep_block)

    @abstractmethod
    def plan_steps(
        self, info: GenerationInfo, num_steps: int
    ) -> tuple[frozenset[int] | None, frozenset[int]]:
        """The generation's ``(cache_steps, reuse_steps)``.

        Args:
            info: The generation's plan (``self.boundary`` is already resolved).
            num_steps: Number of denoising steps.

        Returns:
            The steps whose boundary output is kept (None: every step that computes it), and
            the steps that reuse blocks ``0..boundary``.
        """

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        if slot <= self.boundary and ctx.step in self.reuse_steps:
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.boundary})

    def keep(self, ctx: StepContext, slot: int) -> bool:
        return self.cache_steps is None or ctx.step in self.cache_steps
