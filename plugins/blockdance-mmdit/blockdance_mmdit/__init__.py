"""blockdance's MMDiT plugin: architecture specs for diffusers' SD3Transformer2DModel
(SD3, SD3.5) and FluxTransformer2DModel, whose blocks carry an image and a text stream."""
