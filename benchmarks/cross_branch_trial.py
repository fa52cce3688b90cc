"""Trial for issue 20: can one guidance branch's structural state stand in for the other's?

BlockDance reuses the structural blocks' output of an earlier step of the *same* branch. This
trial asks whether, within one step, the conditional branch's boundary state could instead be
taken from the unconditional branch (or the reverse), so that the structural blocks run for
one half of the classifier-free-guidance batch only.

1. It measures, at the boundary block, the relative L2 between the two branches' states
   against the relative L2 between adjacent steps of the conditional branch.
2. It generates once unhooked (the baseline) and once with the taking branch's boundary
   output replaced by the donor's on the window's steps, and reports SSIM to the baseline per
   seed. The blocks still run in this trial (it measures quality, not speed); the ideal saving
   of the real mechanism, ``steps * (boundary + 1) / (2 * num_steps * num_blocks)``, is counted.

    python benchmarks/cross_branch_trial.py --workload dit-tiny-shapes --seeds 16 --donor uncond
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from blockdance import default_registry
from blockdance.policies.blockdance import window_steps
from blockdance_lab.evaluation.metrics import ssim
from blockdance_lab.workload import GenerateRequest, get_workload

#: Where the conditional half sits in each workload's guidance batch (read from its sampler:
#: the reference DiT sampler stacks [cond; uncond], diffusers' SD3 pipeline [uncond; cond]).
COND_FIRST = {"dit-tiny-shapes": True, "sd3-tiny-shapes": False}


def _image_stream(out: Any) -> torch.Tensor:
    """A DiT block returns the tokens; an SD3 joint block (encoder_hidden_states, hidden_states)."""
    return out if isinstance(out, torch.Tensor) else out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="dit-tiny-shapes", choices=sorted(COND_FIRST))
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--boundary", type=int, default=None, help="default: the architecture's")
    p.add_argument("--window", type=float, nargs=2, default=None, help="default: architecture's")
    p.add_argument("--donor", choices=["cond", "uncond"], default="uncond")
    a = p.parse_args()
    torch.set_num_threads(1)
    workload = get_workload(a.workload)
    target = workload.build()
    model: nn.Module = target.transformer if hasattr(target, "transformer") else target.model
    spec = default_registry().match(model)
    slots = list(spec.blocks(model))
    blocks, steps = len(slots), workload.num_steps
    boundary = spec.default_boundary(blocks) if a.boundary is None else a.boundary
    window = window_steps(tuple(a.window) if a.window else spec.window, steps)
    cond_first = COND_FIRST[a.workload]
    print(f"{workload.name}: {blocks} blocks, boundary {boundary}, window steps "
          f"{window.start}..{window.stop - 1}, {a.seeds} seeds, {a.donor} donates")  # fmt: skip

    step = [-1]
    cross: list[float] = []
    adjacent: list[float] = []
    previous: dict[int, torch.Tensor] = {}
    substitute = [False]

    def count(module: nn.Module, args: Any, kwargs: Any) -> None:
        step[0] += 1

    def at_boundary(module: nn.Module, args: Any, kwargs: Any, out: Any) -> Any:
        x = _image_stream(out)  # (2n, tokens, dim): both guidance halves
        n = x.shape[0] // 2
        cond_rows, uncond_rows = (slice(0, n), slice(n, None))[:: 1 if cond_first else -1]
        cond, uncond = x[cond_rows].float(), x[uncond_rows].float()
        i = step[0]
        if i in window and not substitute[0]:
            cross.append(float((cond - uncond).norm() / uncond.norm()))
            if i - 1 in previous:
                adjacent.append(float((cond - previous[i - 1]).norm() / previous[i - 1].norm()))
        previous.clear()
        previous[i] = cond
        if not (substitute[0] and i in window):
            return None
        donor, taker = (uncond_rows, cond_rows) if a.donor == "uncond" else (cond_rows, uncond_rows)
        y = x.clone()
        y[taker] = x[donor]
        return y if isinstance(out, torch.Tensor) else (out[0], y, *out[2:])

    model.register_forward_pre_hook(count, with_kwargs=True)
    slots[boundary].module.register_forward_hook(at_boundary, with_kwargs=True)
    request = GenerateRequest(tuple(range(a.seeds)), steps)
    base = workload.generate(target, request)
    c, d = torch.tensor(cross), torch.tensor(adjacent)
    ratio = c[len(c) - len(d) :] / d  # (steps with both,)
    print(f"rel. L2 in the window: cond vs uncond {c.mean():.4f}, adjacent steps {d.mean():.4f}; "
          f"ratio per step: median {ratio.median():.2f}, min {ratio.min():.2f}")  # fmt: skip
    substitute[0], step[0] = True, -1
    out = workload.generate(target, request)
    frames = (lambda v: v.flatten(0, 1)) if base.dim() == 5 else (lambda v: v)
    data_range = float(base.max() - base.min())
    per = ssim(frames(out).float(), frames(base).float(), data_range=data_range)
    per = per.reshape(a.seeds, -1).mean(dim=1)  # (seeds,)
    saving = len(window) * (boundary + 1) / (2 * steps * blocks)
    print(f"ideal saving {saving:.1%}: SSIM to the baseline {per.mean():.4f} "
          f"(min {per.min():.4f}, max {per.max():.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
