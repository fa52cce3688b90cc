"""The controls of a BlockDance-Ada network at its compute, for the bench files
benchmarks/ada_tiny_{dit,sd3}.yaml: generate the demo seeds with the network attached, count
its reuse steps per sample, and print

- a ``random`` row reusing the same number of steps (the mean over the seeds, rounded),
  drawn from Ada's window (steps ρ·s .. s − 1);
- a ``blockdance-ada`` row of the learned *static* schedule at a threshold that makes it reuse
  that many steps too (its steps ranked by their learned cache probability), so the static
  control runs at the network's compute, not at the compute its own λ led to.

    python benchmarks/ada_controls.py --workload dit-tiny-shapes --seeds 64 \\
        --network lab/blockdance_lab/zoo/ada/assets/dit-tiny-shapes-network-lam4.safetensors \\
        --static lab/blockdance_lab/zoo/ada/assets/dit-tiny-shapes-static-lam4.safetensors
"""

from __future__ import annotations

import argparse
import os

import torch

from blockdance.policies.ada import AdaConfig, load_decider
from blockdance_lab.ada_training import evaluate_policies


def matched_threshold(probabilities: torch.Tensor, reuse: int) -> float:
    """A threshold under which exactly the ``reuse`` least likely cache steps fall.

    Args:
        probabilities: The static schedule's cache-step probabilities, ``(decided,)``.
        reuse: Reuse steps wanted.
    """
    m = probabilities.sort().values
    if not 0 <= reuse <= m.numel():
        raise ValueError(f"reuse={reuse} is outside 0..{m.numel()}")
    if reuse == 0:
        return float(m[0]) / 2
    if reuse == m.numel():
        return min(1.0, float(m[-1]) + 1e-6)
    if m[reuse] == m[reuse - 1]:
        raise ValueError(f"steps {reuse - 1} and {reuse} of the ranking tie: no threshold splits")
    return float(m[reuse - 1] + m[reuse]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--network", required=True, help="the per-sample network's weights")
    parser.add_argument("--static", required=True, help="the static schedule's weights")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rho = float(load_decider(args.network).meta["recipe"]["rho"])  # the ρ it was trained at
    ada = AdaConfig(weights=args.network, rho=rho)
    (_, row) = evaluate_policies(args.workload, [("ada", ada)], seeds=range(args.seeds))
    counts = [len(s) for s in row["reuse_steps"]]
    reuse = round(sum(counts) / len(counts))
    static = load_decider(args.static)
    first, steps = static.config.first_step, static.config.num_steps
    with torch.no_grad():
        probs = torch.sigmoid(static.network(torch.zeros(1), None))[0]
    threshold = matched_threshold(probs, reuse)
    distinct = len({tuple(s) for s in row["reuse_steps"]})
    print(f"# {args.network}: reuse steps per sample {min(counts)}..{max(counts)}, mean "
          f"{sum(counts) / len(counts):.2f} -> {reuse}; {distinct} distinct schedules of "
          f"{len(counts)}; ideal {row['ideal']:.4f}, SSIM {row['ssim']:.4f}")  # fmt: skip
    rel = os.path.relpath(args.static, "benchmarks")
    static_rho = float(static.meta["recipe"]["rho"])
    rho_option = "" if static_rho == 0.4 else f"rho: {static_rho:g}, "
    print(f"  - {{kind: blockdance-ada, weights: {rel}, {rho_option}threshold: {threshold:.6g}, "
          f'label: "ada static at {reuse} reuse steps"}}')  # fmt: skip
    for seed in args.random_seeds:
        print(f"  - {{kind: random, fraction: {reuse / steps:.6g}, window: "
              f"[{first / steps:g}, 1.0], seed: {seed}, "
              f'label: "random {reuse} steps from {first} (seed {seed})"}}')  # fmt: skip


if __name__ == "__main__":
    main()
