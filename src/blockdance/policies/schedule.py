"""The ``schedule`` policy: an explicit table of which blocks each step reuses."""

from __future__ import annotations

import bisect
import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, overload

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from blockdance.errors import InvalidInputError
from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext

#: What a block entry may be, for the messages.
BLOCK_FORMS = 'non-negative integers or ranges such as "0-20" (a string "a" or "a-b", a <= b)'
_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", re.ASCII)
_STEP = re.compile(r"\s*\d+\s*", re.ASCII)


def _as_index(value: object) -> int | None:
    """``value`` as an int if it is an integer (not a bool, not a float), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _entry_run(item: object, where: str) -> tuple[int, int]:
    """The ``(first, last)`` run of one block entry: ``3``, ``"3"`` or ``"3-5"``."""
    index = _as_index(item)
    if index is not None:
        if index < 0:
            raise ValueError(f"{where}: block {index} is negative; blocks are {BLOCK_FORMS}")
        return index, index
    if isinstance(item, str):
        match = _RANGE.fullmatch(item)
        if match is None:
            raise ValueError(
                f"{where}: block entry {item!r} is not a block index or range; "
                f"blocks are {BLOCK_FORMS}"
            )
        lo = int(match[1])
        hi = lo if match[2] is None else int(match[2])
        if hi < lo:
            raise ValueError(
                f"{where}: block range {item!r} is empty (it ends before it starts); "
                f'write "{hi}-{lo}"'
            )
        return lo, hi
    raise ValueError(
        f"{where}: block entry {item!r} ({type(item).__name__}) is not a block index; "
        f"blocks are {BLOCK_FORMS}"
    )


def _step_index(key: object) -> int:
    """A schedule key as a step index: an int or a digit string (JSON object keys)."""
    index = _as_index(key)
    if index is None and isinstance(key, str) and _STEP.fullmatch(key):
        index = int(key)
    if index is None or index < 0:
        raise ValueError(
            f"schedule step {key!r} ({type(key).__name__}) is not a step index; steps are "
            'non-negative integers, or digit strings such as the JSON key "12"'
        )
    return index


class Blocks(Sequence[int]):
    """Sorted, distinct block indices kept as contiguous runs, so ``"0-20"`` is one pair.

    Acts as the sorted tuple of its indices (iteration, ``len``, indexing, ``in``, ``==``
    with a tuple or list) without expanding ranges: a range far beyond any model costs
    nothing until :meth:`SchedulePolicy.begin` rejects it.

    Args:
        runs: Inclusive ``(first, last)`` pairs in any order; overlapping or adjacent pairs
            merge.
    """

    __slots__ = ("_ends", "runs")

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(runs):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        #: Inclusive ``(first, last)`` runs, sorted and disjoint; each ``last`` is a boundary.
        self.runs: tuple[tuple[int, int], ...] = tuple(merged)
        ends, total = [], 0
        for lo, hi in merged:
            total += hi - lo + 1
            ends.append(total)
        self._ends = tuple(ends)  # indices held by runs[0..i]

    @classmethod
    def parse(cls, spec: object, where: str = "schedule") -> Blocks:
        """Read ``3``, ``"0-20"`` or a list of such entries (``[0, "3-5", 9]``).

        Args:
            spec: The blocks of one step.
            where: What the messages name, e.g. ``"schedule step 12"``.

        Raises:
            ValueError: An entry is not a non-negative integer or an ``"a-b"`` range (bools,
                floats and None are refused, not rounded).
        """
        if isinstance(spec, Blocks):
            return spec
        if isinstance(spec, range) and spec.step == 1:
            if spec.start < 0:
                raise ValueError(
                    f"{where}: {spec!r} holds negative blocks; blocks are {BLOCK_FORMS}"
                )
            return cls([(spec.start, spec.stop - 1)] if spec else [])
        if isinstance(spec, (str, bytes, Mapping)) or not isinstance(spec, Iterable):
            spec = [spec]
        return cls(_entry_run(item, where) for item in spec)

    def entries(self) -> list[int | str]:
        """The compact form: an integer per single block, ``"first-last"`` per longer run."""
        return [lo if lo == hi else f"{lo}-{hi}" for lo, hi in self.runs]

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[int, ...]: ...

    def __getitem__(self, index: int | slice) -> int | tuple[int, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        i = operator.index(index)
        i += len(self) if i < 0 else 0
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} blocks")
        r = bisect.bisect_right(self._ends, i)
        return self.runs[r][0] + i - (self._ends[r - 1] if r else 0)

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.runs:
            yield from range(lo, hi + 1)

    def __contains__(self, value: object) -> bool:
        try:
            index = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            return False
        r = bisect.bisect_right(self.runs, index, key=lambda run: run[0]) - 1
        return r >= 0 and index <= self.runs[r][1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Blocks):
            return self.runs == other.runs
        if isinstance(other, (tuple, list)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))  # equal to its tuple, so hashed like it

    def __repr__(self) -> str:
        return f"Blocks({', '.join(repr(e) for e in self.entries())})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda blocks: blocks.entries()
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        entry = {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _RANGE.pattern.join("^$")},
            ]
        }
        return {"anyOf": [entry, {"type": "array", "items": entry}]}


class ScheduleConfig(PolicyConfig):
    """Configuration of the ``schedule`` policy.

    ``reuse`` maps a step index to the blocks reused at that step, as integers or
    ranges such as ``"0-20"``; each step's blocks are held as :class:`Blocks` (contiguous
    runs, not expanded). The last block of each contiguous run is a reuse boundary: its
    output is cached whenever it computes and substituted when reused.
    """

    kind: Literal["schedule"] = "schedule"
    reuse: dict[int, Blocks] = Field(
        default_factory=dict,
        description='Step index -> reused blocks: integers or ranges such as "0-20".',
    )

    @field_validator("reuse", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v  # pydantic's own "valid dictionary" error
        out: dict[int, Blocks] = {}
        keys: dict[int, object] = {}
        for key, blocks in v.items():
            step = _step_index(key)
            if step in out:
                raise ValueError(
                    f"schedule step {step} is listed twice (as {keys[step]!r} and {key!r}); "
                    "merge its blocks into one entry"
                )
            keys[step] = key
            out[step] = Blocks.parse(blocks, where=f"schedule step {step}")
        return out


class SchedulePolicy(Policy[ScheduleConfig]):
    """Reuse exactly the (step, block) pairs listed in the configuration."""

    config_class = ScheduleConfig

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        self.table: dict[int, frozenset[int]] | None = None  # built once begin() checked it
        self._boundaries = frozenset(
            last for blocks in config.reuse.values() for _, last in blocks.runs
        )

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        steps, depth = info.num_steps, info.num_blocks
        for step, blocks in self.config.reuse.items():
            if steps is not None and step >= steps:
                raise InvalidInputError(
                    f"schedule lists step {step}, but the generation has {steps} steps "
                    f"(0..{steps - 1}); drop that step or run more steps"
                )
            if blocks.runs and blocks.runs[-1][1] >= depth:
                raise InvalidInputError(
                    f"schedule step {step} reuses blocks up to {blocks.runs[-1][1]}, but the "
                    f"model has {depth} blocks (0..{depth - 1}); list only blocks 0..{depth - 1}"
                )
        if self.table is None:
            self.table = {step: frozenset(blocks) for step, blocks in self.config.reuse.items()}

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        reused = self.table.get(ctx.step) if self.table is not None else None
        if reused is not None and slot in reused:
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return self._boundaries
