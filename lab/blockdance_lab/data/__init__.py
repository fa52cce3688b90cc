"""Procedural data the embedded-default models are trained and evaluated on.

:mod:`~blockdance_lab.data.shapes` renders the coloured-shape images and videos with their
labels and captions; :mod:`~blockdance_lab.data.captions` holds the tiny text encoder that
reads those captions.
"""
