"""The core stands alone: importing blockdance and attaching a policy to a plugin's model
imports nothing of the lab, nor diffusers, timm, safetensors or einops.

Runs in the full test environment (with the lab blocked) and in the ``core`` nox session,
a venv holding only the core, its three dependencies, pytest and the tutorial's example
plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("blockdance_encoder", reason="the tutorial's example plugin is not installed")

# (tqdm is left out: torch imports it itself where it is installed)
HEAVY = ("blockdance_lab", "diffusers", "timm", "safetensors", "einops", "transformers")

SCRIPT = """
import json, sys
import torch
import blockdance
from blockdance_encoder import encoder_tiny, sample

torch.manual_seed(0)
model = encoder_tiny().eval()
steps = 20
with torch.no_grad():
    reference = sample(model, (0, 1), steps)
    with blockdance.attach(model, "blockdance", N=2) as handle:
        with handle.generation(num_steps=steps):
            reused = sample(model, (0, 1), steps)
stats = handle.stats
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
print(json.dumps({
    "architecture": handle.architecture.name,
    "block_calls": stats.block_calls,
    "skipped": stats.reused_blocks,
    "changed": not torch.equal(reference, reused),
    "finite": bool(torch.isfinite(reused).all()),
    "heavy": heavy,
}))
"""


def test_core_attaches_blockdance_without_the_lab_or_diffusers():
    env = {**os.environ, "BLOCKDANCE_BLOCK_PLUGINS": "lab"}  # the lab, where installed, is not
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"the core imported {result['heavy']}"
    assert result["architecture"] == "encoder"
    # 20 steps, window 25%-95% -> steps 5..18, N=2: reuse on steps 6, 8, ..., 18 (7 steps),
    # each skipping the structural layers 0..5 of the 8 layers (default_boundary(8) == 5)
    layers, boundary, reuse_steps = 8, 5, len(range(6, 19, 2))
    assert result["block_calls"] == 20 * layers
    assert result["skipped"] == reuse_steps * (boundary + 1)
    assert result["changed"] and result["finite"]


def test_a_lab_command_without_the_lab_says_how_to_get_it():
    code = "import sys; from blockdance.cli import main; sys.exit(main(['demo', '--seeds', '2']))"
    env = {**os.environ, "BLOCKDANCE_BLOCK_PLUGINS": "lab"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "comes with blockdance's lab" in done.stderr and "pip install ./lab" in done.stderr
