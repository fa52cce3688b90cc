"""Draw docs/ada.md's picture: SSIM against ideal saving for BlockDance-N, the shipped
BlockDance-Ada networks, their learned static schedules and random reuse at Ada's rate, from
the bench.json files of benchmarks/ada_tiny_{dit,sd3}.yaml::

    python benchmarks/plot_ada_front.py --dit outputs/ada_dit/bench.json \\
        --sd3 outputs/ada_sd3/bench.json [--skip "λ=6"]

The dashed line joins BlockDance N=2 and N=3: issue 17 asks for an Ada point above it. The
script also prints each row against that line at the row's own saving, seed by seed: the
line's SSIM for a seed is the interpolation of that seed's N=2 and N=3 SSIM (a paired
difference with its bootstrap interval; positive: above the line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from plot_policies_front import rows

from blockdance_lab.statistics import paired_difference

#: (legend, row-label prefix, colour, marker), drawn in this order.
SERIES = [
    ("BlockDance N=2, 3, 4", "blockdance N=", "tab:gray", "o"),
    ("BlockDance-Ada (per sample)", "ada network", "tab:red", "s"),
    ("learned static schedule", "ada static", "tab:blue", "^"),
    ("random, Ada's rate and window", "random", "tab:olive", "v"),
]


def against_the_line(path: str) -> list[str]:
    """Lines of a table: each row's ideal saving, SSIM, the N=2-N=3 line's SSIM there and the
    paired difference to it over the seeds (a mean and its 95% bootstrap interval)."""
    data = {r["policy"]: r for r in json.loads(Path(path).read_text())["rows"]}
    n2, n3 = data["blockdance N=2"], data["blockdance N=3"]
    out = [f"{'policy':40} {'ideal':>7} {'SSIM':>7} {'line':>7}  above the line (paired)"]
    for label, r in data.items():
        if r["status"] != "ok" or not r["ideal"]:
            continue
        w = (r["ideal"] - n2["ideal"]) / (n3["ideal"] - n2["ideal"])  # 0 at N=2, 1 at N=3
        line = [(1 - w) * a + w * b for a, b in zip(n2["per_seed"]["ssim"], n3["per_seed"]["ssim"])]
        d = paired_difference(r["per_seed"]["ssim"], line)
        mean = sum(line) / len(line)
        out.append(f"{label[:40]:40} {r['ideal']:>7.2%} {r['ssim']:>7.4f} {mean:>7.4f}  "
                   f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dit", nargs="+", required=True, help="dit-tiny-shapes bench.json")
    parser.add_argument("--sd3", nargs="+", required=True, help="sd3-tiny-shapes bench.json")
    parser.add_argument("--skip", nargs="*", default=[], help="leave out rows whose label has it")
    parser.add_argument("--out", default="docs/images/ada_front.png")
    args = parser.parse_args()
    for name, paths in (("dit-tiny-shapes", args.dit), ("sd3-tiny-shapes", args.sd3)):
        print(f"{name}:", *against_the_line(paths[0]), sep="\n")
    panels = [
        (name, {k: v for k, v in rows(paths).items() if not any(x in k for x in args.skip)})
        for name, paths in (("dit-tiny-shapes", args.dit), ("sd3-tiny-shapes", args.sd3))
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, (title, data) in zip(axes, panels, strict=True):
        for label, prefix, color, marker in SERIES:
            points = sorted((v, k) for k, v in data.items() if k.startswith(prefix))
            if not points:
                continue
            xs, ys = [p[0][0] for p in points], [p[0][1] for p in points]
            err = [[p[0][1] - p[0][2] for p in points], [p[0][3] - p[0][1] for p in points]]
            ax.errorbar(xs, ys, yerr=err, color=color, marker=marker, capsize=2, ls="none",
                        label=label)  # fmt: skip
            for x, y, (_, name) in zip(xs, ys, points, strict=True):
                tag = name.removeprefix(prefix).strip() or name
                ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        n2, n3 = data.get("blockdance N=2"), data.get("blockdance N=3")
        if n2 and n3:
            ax.plot([n2[0], n3[0]], [n2[1], n3[1]], color="tab:gray", ls="--", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ideal saving: share of block calls skipped (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM to the full model (95% CI, 64 seeds)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
