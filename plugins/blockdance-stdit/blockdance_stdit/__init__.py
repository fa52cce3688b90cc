"""blockdance's STDiT plugin: the reference STDiT (Open-Sora v1 layout), its official
checkpoint loader, and the architecture specs for it and for diffusers'
LatteTransformer3DModel (spatial and temporal blocks interleaved)."""
