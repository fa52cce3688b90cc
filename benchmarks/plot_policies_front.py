"""Draw docs/policies.md's picture: SSIM against ideal saving for BlockDance, its forecast and
the peers, from the bench.json files of the runs the docs cite::

    python benchmarks/plot_policies_front.py \\
        --sd3 outputs/front/sd3_peers/bench.json --dit outputs/front/dit/bench.json \\
        --stdit outputs/bench_stdit32/bench.json outputs/wide/stdit/bench.json

Each family's points are drawn with their intervals; a line joins the ones no other point of
the family beats on both axes (the family's own front).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Point = tuple[float, float, float, float]  # ideal %, SSIM, CI low, CI high

#: (legend, row-label test, colour, marker), drawn in this order.
SERIES = [
    ("blockdance (the paper)", lambda k: k.startswith("blockdance N="), "tab:gray", "o"),
    ("blockdance-forecast", lambda k: k.startswith("blockdance-forecast"), "tab:green", "s"),
    ("blockdance-adaptive", lambda k: k.startswith("blockdance-adaptive"), "olive", "*"),
    ("cache-dit DBCache + TaylorSeer", lambda k: k.startswith("cache-dit") and k.endswith("+TS"),
     "tab:blue", "^"),
    ("dbcache + TaylorSeer (native)", lambda k: k.startswith("dbcache") and _ts(k), "tab:blue",
     "^"),
    ("cache-dit DBCache", lambda k: k.startswith("cache-dit") and "+TS" not in k, "tab:cyan", "v"),
    ("dbcache (native)", lambda k: k.startswith("dbcache") and not _ts(k), "tab:cyan", "v"),
    ("diffusers MagCache", lambda k: k.startswith("diffusers MagCache"), "tab:orange", "D"),
    ("magcache (native)", lambda k: k.startswith("magcache"), "tab:orange", "D"),
    ("taylorseer (whole stack)", lambda k: k.startswith("taylorseer"), "tab:purple", "P"),
]  # fmt: skip


def _ts(label: str) -> bool:
    """Whether a native dbcache row's label says it forecasts with TaylorSeer."""
    return "taylorseer=True" in label or "TaylorSeer" in label


def family_front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both saving and SSIM, by saving."""
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] > p[1] for q in points if q != p)
    )


def rows(paths: list[str]) -> dict[str, Point]:
    """Rows that ran and skip blocks, by label, from several bench.json files."""
    out: dict[str, Point] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            if r["status"] == "ok" and r["ideal"]:
                out[r["policy"]] = (
                    100 * r["ideal"],
                    r["ssim"],
                    r["ssim_ci_low"],
                    r["ssim_ci_high"],
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd3", nargs="+", required=True, help="sd3-tiny-shapes bench.json")
    parser.add_argument("--dit", nargs="+", required=True, help="dit-tiny-shapes bench.json")
    parser.add_argument("--stdit", nargs="*", default=[], help="stdit-tiny-shapes bench.json")
    parser.add_argument("--out", default="docs/images/policies_front.png")
    args = parser.parse_args()
    panels = [("sd3-tiny-shapes", rows(args.sd3), 0.90), ("dit-tiny-shapes", rows(args.dit), 0.84)]
    if args.stdit:
        panels.append(("stdit-tiny-shapes (video, per-frame SSIM)", rows(args.stdit), 0.84))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8))
    for ax, (title, data, low) in zip(axes, panels, strict=True):
        for label, wanted, color, marker in SERIES:
            points = sorted(v for k, v in data.items() if wanted(k))
            if not points:
                continue
            err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=err, color=color,
                        marker=marker, capsize=2, ls="none", label=label)  # fmt: skip
            front = family_front(points)
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ideal saving: share of block calls skipped (%)")
        ax.set_xlim(20, 56)
        ax.set_ylim(low, 1.001)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM to the full model (95% CI)")
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=5, fontsize=8,
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
