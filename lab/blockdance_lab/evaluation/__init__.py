"""Judging generated samples: the quality metrics and the shipped probes.

:mod:`~blockdance_lab.evaluation.metrics` holds SSIM, PSNR, class accuracy and the Fréchet
distance; :mod:`~blockdance_lab.evaluation.probe` the shape probe (train, save, load,
features); :mod:`~blockdance_lab.evaluation.shapes_probe` the probes as the workloads'
quality probes; :mod:`~blockdance_lab.evaluation.motion` the direction a video's shape moves.
"""
