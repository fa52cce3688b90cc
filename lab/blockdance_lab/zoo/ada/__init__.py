"""BlockDance-Ada decision networks trained for the tiny models (card: ``assets/ADA_CARD.md``).

Each network is a ``.safetensors`` file with its ``.json`` sidecar (recipe, training seeds,
history), written by ``blockdance train-ada`` and loaded by the ``blockdance-ada`` policy::

    blockdance.attach(sampler, "blockdance-ada", weights=shipped_network("dit-tiny-shapes", 3))
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS", "shipped_network", "shipped_networks"]

#: The folder of the shipped networks.
ASSETS = Path(__file__).resolve().parent / "assets"


def shipped_networks() -> list[Path]:
    """Every shipped network's weights file, sorted by name."""
    return sorted(ASSETS.glob("*.safetensors"))


def shipped_network(
    workload: str, lam: float, variant: str = "network", rho: float | None = None
) -> Path:
    """The weights file of a shipped network.

    Args:
        workload: The workload it was trained on, e.g. ``"dit-tiny-shapes"``.
        lam: Its λ (``R = C + λ·SSIM``).
        variant: ``"network"`` (per sample) or ``"static"`` (the learned static control).
        rho: Its ρ when not the paper's 0.4 (pass the same ``rho`` to the policy).

    Raises:
        FileNotFoundError: No such network; the message lists the shipped ones.
    """
    stem = f"{workload}-{variant}-lam{lam:g}" + ("" if rho is None else f"-rho{rho:g}")
    path = ASSETS / f"{stem}.safetensors"
    if not path.is_file():
        names = ", ".join(p.stem for p in shipped_networks()) or "(none)"
        raise FileNotFoundError(
            f"no shipped BlockDance-Ada network {path.stem!r}; shipped: {names}. Train one with "
            "`blockdance train-ada` and pass its path as weights="
        )
    return path
