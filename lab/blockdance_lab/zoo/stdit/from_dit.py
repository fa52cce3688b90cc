"""Initialise an STDiT from a class-conditional DiT, as PixArt-α started from DiT.

Open-Sora v1 initialised its STDiT from PixArt-α, and PixArt-α from DiT (ImageNet). The same
chain serves the tiny STDiT: its spatial attention, MLP, patch and timestep embedders have the
DiT's shapes and are copied; the caption cross-attention and the temporal attention keep
their zero-initialised output projections, so the STDiT starts as the DiT's unconditional
(null-class) model applied frame by frame.

The DiT modulates each block with its own linear map of ``SiLU(t + y)``; the STDiT shares one
(``t_block``) and adds a per-block table (adaLN-single). The conversion is PixArt-α's
re-parametrisation, made a least-squares fit over the timesteps:

* the null class's embedding is folded into the timestep MLP's output bias, so the STDiT's
  timestep embedding equals the DiT's ``t + y_null``;
* ``t_block`` takes the mean of the blocks' maps, and each block's ``scale_shift_table`` the
  mean, over the training timesteps, of what its own map adds to that shared one;
* the final layer's table is fitted the same way to the DiT's final modulation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from blockdance_stdit.model import STDiT

__all__ = ["stdit_from_dit_state"]


@torch.no_grad()
def stdit_from_dit_state(
    stdit: STDiT, dit_state: Mapping[str, torch.Tensor], *, num_timesteps: int = 1000
) -> STDiT:
    """Load a DiT's weights into ``stdit`` in place (PixArt-α's re-parametrisation).

    Args:
        stdit: An STDiT whose width, depth, heads, MLP ratio and spatial patch match the DiT's;
            frame patch 1.
        dit_state: The DiT's ``state_dict()`` (``blocks.{i}.adaLN_modulation.1``, ``y_embedder
            .embedding_table`` with the null class last, ...).
        num_timesteps: Training timesteps the modulation fit averages over.

    Returns:
        ``stdit``, for chaining.

    Raises:
        ValueError: The DiT does not fit the STDiT; the message names the first key that
            differs.
    """
    depth = len(stdit.blocks)
    dit_depth = len({k.split(".")[1] for k in dit_state if k.startswith("blocks.")})
    if dit_depth != depth:
        raise ValueError(f"the DiT has {dit_depth} blocks, the STDiT {depth}; build them alike")
    dst = stdit.state_dict()
    copies = {
        "x_embedder.proj.bias": "x_embedder.proj.bias",
        "t_embedder.mlp.0.weight": "t_embedder.mlp.0.weight",
        "t_embedder.mlp.0.bias": "t_embedder.mlp.0.bias",
        "t_embedder.mlp.2.weight": "t_embedder.mlp.2.weight",
        "final_layer.linear.weight": "final_layer.linear.weight",
        "final_layer.linear.bias": "final_layer.linear.bias",
    }
    for i in range(depth):
        for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            for p in ("weight", "bias"):
                copies[f"blocks.{i}.{name}.{p}"] = f"blocks.{i}.{name}.{p}"
    patch = dit_state["x_embedder.proj.weight"].unsqueeze(2)  # (D, C, 1, p, p)
    loaded: dict[str, torch.Tensor] = {"x_embedder.proj.weight": patch}
    loaded.update({k: dit_state[v] for k, v in copies.items()})
    # timestep embedding t + y_null: fold the null class (last row) into the output bias
    null = dit_state["y_embedder.embedding_table.weight"][-1]  # (D,)
    loaded["t_embedder.mlp.2.bias"] = dit_state["t_embedder.mlp.2.bias"] + null
    for k, v in loaded.items():
        if k not in dst or dst[k].shape != v.shape:
            want = tuple(dst[k].shape) if k in dst else "absent"
            raise ValueError(f"DiT key for {k!r} has shape {tuple(v.shape)}, the STDiT {want}")
        dst[k].copy_(v)

    # SiLU(t + y_null) over the timesteps, with the embedder just loaded
    t = torch.arange(num_timesteps)
    emb = stdit.t_embedder(t, dtype=torch.float32)  # (T, D)
    s = torch.nn.functional.silu(emb)  # (T, D)
    weights = torch.stack(
        [dit_state[f"blocks.{i}.adaLN_modulation.1.weight"] for i in range(depth)]
    )
    biases = torch.stack([dit_state[f"blocks.{i}.adaLN_modulation.1.bias"] for i in range(depth)])
    w_shared, b_shared = weights.mean(0), biases.mean(0)  # (6D, D), (6D,)
    t_linear = stdit.t_block[1]
    assert isinstance(t_linear, torch.nn.Linear)
    t_linear.weight.copy_(w_shared)
    t_linear.bias.copy_(b_shared)
    for i, block in enumerate(stdit.blocks):
        own = s @ weights[i].T + biases[i]  # (T, 6D)
        shared = s @ w_shared.T + b_shared  # (T, 6D)
        block.scale_shift_table.copy_((own - shared).mean(0).view(6, -1))  # type: ignore[operator]
    final = s @ dit_state["final_layer.adaLN_modulation.1.weight"].T
    final = final + dit_state["final_layer.adaLN_modulation.1.bias"]  # (T, 2D): shift, scale
    residual = final.view(num_timesteps, 2, -1) - emb[:, None]  # (T, 2, D)
    stdit.final_layer.scale_shift_table.copy_(residual.mean(0))
    return stdit
