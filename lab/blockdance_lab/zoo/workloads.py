"""The zoo's workloads: the tiny models trained here, with their samplers and probes.

Registered by the lab's plugin; each model and sampler is imported on first use."""

from __future__ import annotations

from blockdance import lazy
from blockdance_lab.workload import Workload

DIT_WORKLOADS = (
    Workload(
        name="dit-tiny-shapes",
        description="tiny DiT trained here on procedural shapes (8 blocks, 64 tokens, 32 px)",
        build=lazy("blockdance_lab.zoo.dit.workloads", "tiny_shapes_sampler"),
        generate=lazy("blockdance_lab.zoo.dit.workloads", "generate_images"),
        num_steps=50,
        scheduler="DDIM",
        probe=lazy("blockdance_lab.zoo.dit.workloads", "tiny_shapes_probe"),
        images=True,
    ),
    Workload(
        name="dit-s2",
        description="DiT-S/2 (12 blocks, 64 tokens), random weights: latency and schedule only",
        build=lazy("blockdance_lab.zoo.dit.workloads", "random_dit_s2"),
        generate=lazy("blockdance_lab.zoo.dit.workloads", "generate_latents"),
        num_steps=50,
        scheduler="DDIM",
    ),
)


SD3_WORKLOADS = (
    Workload(
        name="sd3-tiny-shapes",
        description="tiny SD3 trained here on captioned shapes (8 joint blocks, 64+10 tokens)",
        build=lazy("blockdance_lab.zoo.sd3.workloads", "tiny_sd3_sampler"),
        generate=lazy("blockdance_lab.zoo.sd3.workloads", "generate_images"),
        num_steps=50,
        scheduler="flow Euler",
        probe=lazy("blockdance_lab.zoo.sd3.workloads", "tiny_sd3_probe"),
        images=True,
    ),
)


STDIT_WORKLOADS = (
    Workload(
        name="stdit-tiny-shapes",
        description="tiny Open-Sora STDiT trained here on captioned moving shapes "
        "(8 blocks, 8 frames x 64 tokens)",
        build=lazy("blockdance_lab.zoo.stdit.workloads", "tiny_stdit_sampler"),
        generate=lazy("blockdance_lab.zoo.stdit.workloads", "generate_videos"),
        num_steps=50,
        scheduler="DDIM",
        probe=lazy("blockdance_lab.zoo.stdit.workloads", "tiny_stdit_probe"),
        videos=True,
        demo_seeds=16,
    ),
)


#: Every workload of the zoo, in the order ``blockdance demo`` runs them.
WORKLOADS = DIT_WORKLOADS + SD3_WORKLOADS + STDIT_WORKLOADS
