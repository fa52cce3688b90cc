"""blockdance's DiT plugin: the reference DiT (facebookresearch layout), its official
checkpoint loader and sampler, and the architecture specs for diffusers'
DiTTransformer2DModel and PixArtTransformer2DModel."""
