"""What ran: per step and guidance branch, which blocks computed and which were reused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallRecord:
    """One call of the top-level model: a (step, branch) pair.

    Args:
        step: Step index within the generation.
        branch: Call index within the step (guidance branch).
        timestep: Timestep value that reached the model, when readable.
        reused: One flag per block call in execution order; True where the block was reused.
        slots: The slot index of each block call, parallel to ``reused`` (slots a model skips,
            such as Latte's temporal blocks with temporal attention off, are absent).
        partial: Block calls decided per sample with some samples computing: position in
            ``reused`` -> share of the batch's rows that reused (``reused`` is False there).
    """

    step: int
    branch: int
    timestep: float | None
    reused: list[bool] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    partial: dict[int, float] = field(default_factory=dict)

    @property
    def reused_share(self) -> float:
        """Block calls skipped in this call, a per-sample call counted by its reused rows."""
        return sum(self.reused) + sum(self.partial.values())

    def reused_slots(self) -> list[int]:
        """Slot indices of the reused block calls."""
        slots = self.slots if len(self.slots) == len(self.reused) else range(len(self.reused))
        return [slot for slot, r in zip(slots, self.reused, strict=True) if r]


@dataclass
class GenerationStats:
    """Statistics of one generation.

    Args:
        num_steps: Number of steps, when known.
        num_blocks: Number of block slots in the model.
        slot_kinds: Kind of each slot (``"block"``, ``"spatial"`` …).
        policy: Name of the policy that decided.
        step_source: How the steps were known (``GenerationInfo.step_source``).

    ``cache_bytes`` counts the runtime's cache (boundary states and side-flow outputs) plus
    what the policy reports holding (``Policy.memory_bytes``, also in ``policy_bytes``);
    ``peak_cache_bytes`` is its largest value.
    """

    num_steps: int | None
    num_blocks: int
    slot_kinds: tuple[str, ...] = ()
    policy: str = ""
    step_source: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    cache_bytes: int = 0
    peak_cache_bytes: int = 0
    side_flow_bytes: int = 0
    peak_side_flow_bytes: int = 0
    policy_bytes: int = 0
    peak_policy_bytes: int = 0

    @property
    def block_calls(self) -> int:
        """Blocks the model asked for, computed or reused."""
        return sum(len(c.reused) for c in self.calls)

    @property
    def reused_blocks(self) -> float:
        """Block calls whose compute was skipped; a call decided per sample counts the share
        of its rows that reused, so this is a whole number unless samples decided apart."""
        return sum(c.reused_share for c in self.calls)

    @property
    def computed_blocks(self) -> float:
        return self.block_calls - self.reused_blocks

    @property
    def saved_fraction(self) -> float:
        """Share of block computations skipped: the ideal latency reduction from blocks."""
        total = self.block_calls
        return self.reused_blocks / total if total else 0.0

    @property
    def steps_seen(self) -> int:
        return 1 + max((c.step for c in self.calls), default=-1)

    @property
    def branches(self) -> int:
        return 1 + max((c.branch for c in self.calls), default=-1)

    def reused_pairs(self, branch: int = 0) -> set[tuple[int, int]]:
        """The (step, block) pairs reused in ``branch`` by the whole batch (a block run that
        some samples computed is not among them: see :meth:`reuse_map`)."""
        return {(c.step, b) for c in self.calls if c.branch == branch for b in c.reused_slots()}

    def reuse_map(self, branch: int = 0) -> list[list[float]]:
        """A steps × blocks grid of the share of the batch's rows that reused the block in
        ``branch``: 1.0 where the whole batch reused, 0.0 where it computed, and in between
        where samples decided apart (for plots)."""
        grid = [[0.0] * self.num_blocks for _ in range(self.steps_seen)]
        for c in self.calls:
            if c.branch != branch:
                continue
            slots = c.slots if len(c.slots) == len(c.reused) else range(len(c.reused))
            for i, (slot, reused) in enumerate(zip(slots, c.reused, strict=True)):
                grid[c.step][slot] = 1.0 if reused else c.partial.get(i, 0.0)
        return grid

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "num_steps": self.num_steps,
            "step_source": self.step_source,
            "num_blocks": self.num_blocks,
            "steps_seen": self.steps_seen,
            "branches": self.branches,
            "block_calls": self.block_calls,
            "reused_blocks": self.reused_blocks,
            "saved_fraction": self.saved_fraction,
            "peak_cache_bytes": self.peak_cache_bytes,
            "peak_side_flow_bytes": self.peak_side_flow_bytes,
            "peak_policy_bytes": self.peak_policy_bytes,
            "calls": [
                {
                    "step": c.step,
                    "branch": c.branch,
                    "timestep": c.timestep,
                    "reused": c.reused_slots(),
                    **(
                        {"partial": {str(c.slots[i]): v for i, v in c.partial.items()}}
                        if c.partial
                        else {}
                    ),
                }
                for c in self.calls
            ],
        }

    def summary(self) -> str:
        """A few human-readable lines."""
        mib = self.peak_cache_bytes / 2**20
        lines = [
            f"policy {self.policy!r}: {self.steps_seen} steps x {self.branches} branch(es) x "
            f"{self.num_blocks} blocks",
            f"blocks computed {self.computed_blocks:g}, reused {self.reused_blocks:g} "
            f"({100 * self.saved_fraction:.1f}% of block compute saved)",
            f"peak cache {mib:.2f} MiB",
        ]
        return "\n".join(lines)

    def step_table(self, branch: int = 0) -> str:
        """One line per step: ``C`` computed, ``R`` reused, ``r`` reused by some of the
        batch's samples (per-sample decisions), per block."""
        rows = []
        for c in self.calls:
            if c.branch == branch:
                row = ["-"] * self.num_blocks  # "-": the model did not call this slot
                slots = c.slots if len(c.slots) == len(c.reused) else range(len(c.reused))
                for i, (slot, r) in enumerate(zip(slots, c.reused, strict=True)):
                    row[slot] = "R" if r else "r" if i in c.partial else "C"
                marks = "".join(row)
                rows.append(f"step {c.step:4d}  {marks}")
        return "\n".join(rows)
