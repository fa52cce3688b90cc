"""Image-consistency and distribution metrics in pure torch.

- ``ssim``: structural similarity (Wang et al., 2004) per image, Gaussian window 11, σ = 1.5,
  K1 = 0.01, K2 = 0.03, computed over the *valid* region (no padding, as in the reference
  implementation and ``pytorch_msssim``). Images smaller than 11 px use the largest odd window
  that fits, with the same σ, so e.g. 8-px images still work; a 32-px image gives a 22 × 22
  SSIM map that is averaged with the channels.
- ``psnr``: peak signal-to-noise ratio per image; identical images give ``inf`` unless a cap
  is asked for.
- ``frechet_distance``: Fréchet distance between Gaussians fitted to two feature sets,
  computed in float64 with symmetric eigendecompositions (no scipy).
- ``class_accuracy``: fraction of correct predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_accuracy", "frechet_distance", "psnr", "ssim"]

_WINDOW = 11
_SIGMA = 1.5
_K1 = 0.01
_K2 = 0.03


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"expected two tensors of the same shape, got {a.shape} and {b.shape}")
    if a.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) batches, got shape {tuple(a.shape)}")


def _float(x: Tensor) -> Tensor:
    """Float64 stays float64; everything else is computed in float32."""
    return x if x.dtype == torch.float64 else x.float()


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian: (size,)."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _blur(x: Tensor, w: Tensor) -> Tensor:
    """Separable valid-region Gaussian filter per channel: (N, C, H, W) -> (N, C, H', W')."""
    c = x.shape[1]
    k = w.numel()
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(a: Tensor, b: Tensor, data_range: float = 2.0) -> Tensor:
    """Structural similarity of each image pair, averaged over channels and pixels.

    The window is 11 px (σ = 1.5) and only its fully-inside positions count; when an image
    side is under 11 px the window shrinks to the largest odd size that fits (σ unchanged).

    Args:
        a: (N, C, H, W) images.
        b: (N, C, H, W) images, same shape as ``a``.
        data_range: Difference between the largest and smallest possible value (2 for images
            in [-1, 1], 1 for [0, 1], 255 for bytes).

    Returns:
        (N,) SSIM per image, 1 for identical images.
    """
    _check_pair(a, b)
    a, b = _float(a), _float(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    side = min(a.shape[-2], a.shape[-1])
    size = min(_WINDOW, side if side % 2 == 1 else side - 1)
    w = _gaussian_window(max(size, 1), _SIGMA, dtype, a.device)

    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    mu_a, mu_b = _blur(a, w), _blur(b, w)  # (N, C, H', W')
    var_a = _blur(a * a, w) - mu_a**2
    var_b = _blur(b * b, w) - mu_b**2
    cov = _blur(a * b, w) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(dim=1)


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0, max_db: float | None = None) -> Tensor:
    """Peak signal-to-noise ratio of each image pair, in dB.

    Args:
        a: (N, C, H, W) images.
        b: (N, C, H, W) images, same shape as ``a``.
        data_range: Difference between the largest and smallest possible value.
        max_db: If given, values are clamped to at most this (identical images give exactly
            ``max_db``); if ``None``, identical images give ``inf``.

    Returns:
        (N,) PSNR per image.
    """
    _check_pair(a, b)
    a, b = _float(a), _float(b)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)  # (N,)
    out = 10.0 * torch.log10(data_range**2 / mse)  # inf where mse == 0
    return out if max_db is None else out.clamp(max=max_db)


def _sqrtm_psd(m: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix: (D, D) -> (D, D)."""
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0.0).sqrt()) @ vecs.T


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``||μa − μb||² + Tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)``, in float64. The trace of the matrix
    square root is the sum of square roots of the eigenvalues of the symmetric matrix
    ``Σa^½ Σb Σa^½`` (negative round-off eigenvalues are clamped to 0), and a result below 0
    from round-off is returned as 0. Covariances are unbiased (divide by N − 1).

    Args:
        feats_a: (Na, D) features, Na >= 2.
        feats_b: (Nb, D) features, Nb >= 2.

    Returns:
        The distance, >= 0.
    """
    if feats_a.dim() != 2 or feats_b.dim() != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"expected (N, D) feature sets with the same D, got {tuple(feats_a.shape)} and "
            f"{tuple(feats_b.shape)}"
        )
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ValueError("need at least 2 samples per feature set to estimate a covariance")
    a = feats_a.detach().to(torch.float64)
    b = feats_b.detach().to(torch.float64)
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)  # (D,)
    cov_a = torch.cov(a.T)  # (D, D)
    cov_b = torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    inner = (inner + inner.T) / 2.0
    tr_sqrt = torch.linalg.eigvalsh(inner).clamp(min=0.0).sqrt().sum()
    dist = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2.0 * tr_sqrt
    return max(float(dist), 0.0)


def class_accuracy(logits_or_preds: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose predicted class equals the label.

    Args:
        logits_or_preds: (N, K) logits or scores (argmax is taken) or (N,) predicted labels.
        labels: (N,) integer labels.

    Returns:
        Accuracy in [0, 1].
    """
    preds = logits_or_preds.argmax(dim=-1) if logits_or_preds.dim() == 2 else logits_or_preds
    if preds.shape != labels.shape:
        raise ValueError(
            f"expected predictions of shape {tuple(labels.shape)} to match the labels, "
            f"got {tuple(preds.shape)}"
        )
    if labels.numel() == 0:
        raise ValueError("cannot compute accuracy of an empty batch")
    return float((preds.to(labels.device).long() == labels.long()).float().mean())
