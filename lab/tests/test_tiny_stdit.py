"""The tiny STDiT: captions, training stages, save/load, its sampler under blockdance, and the
shipped weights' card (test_workload_quality.py judges the shipped model's videos)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch

import blockdance
from blockdance_lab.data.shapes import CLASS_NAMES, make_video_batch
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.stdit.tiny import (
    DEFAULT_WEIGHTS,
    TinySTDiTConfig,
    TrainConfig,
    load_tiny_stdit,
    save_tiny_stdit,
    seed_captions,
    train_tiny_stdit,
)
from blockdance_lab.zoo.stdit.workloads import (
    STDiTSampler,
    ddim_linear,
    tiny_stdit_sampler,
)
from repo_files import load_script

SMALL = TinySTDiTConfig(frames=4, image_size=16, hidden_size=32, depth=4, num_heads=2, text_dim=16)


def _sampler(model) -> STDiTSampler:
    return STDiTSampler(model, ddim_linear(model.cfg.prediction), guidance_scale=3.0)


def test_seed_captions_name_class_background_and_direction():
    captions = seed_captions(list(range(0, 400, 37)))
    for seed, caption in zip(range(0, 400, 37), captions):
        color, shape = CLASS_NAMES[seed % 16].split()
        assert caption.startswith(f"a {color} {shape} moving ")
    assert len({c.split()[4] for c in seed_captions(range(0, 320, 80))}) == 4  # directions


def test_training_runs_image_then_video_stage_and_weights_round_trip(tmp_path):
    asked = []

    def batch(n, seed, start, frames):
        asked.append((n, frames))
        videos, _, captions = make_video_batch(n, seed, 16, frames=frames, start=start)
        return videos, captions

    cfg = TrainConfig(steps=3, batch_size=2, warmup=1, init="none", image_steps=2,
                      image_batch_size=4, image_target="noise")  # fmt: skip
    model, log = train_tiny_stdit(SMALL, cfg, batch, progress=False)
    # the image stage draws one frame of 4-frame clips, then the video stage whole clips
    assert asked == [(4, 4)] * 2 + [(2, 4)] * 3
    assert log["image"]["steps_run"] == 2 and log["video"]["steps_run"] == 3
    assert torch.isfinite(torch.tensor(log["video"]["final_loss_avg100"]))
    save_tiny_stdit(model, tmp_path / "m.safetensors", {"log": log})
    loaded = load_tiny_stdit(tmp_path / "m.safetensors")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a.half().float(), msg=k)
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["depth"] = 5
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(blockdance.CheckpointMismatchError, match=r"blocks\.4"):
        load_tiny_stdit(tmp_path / "m.safetensors")
    with pytest.raises(FileNotFoundError, match=r"scripts/train_tiny_stdit\.py"):
        load_tiny_stdit(tmp_path / "absent.safetensors")


def test_image_stage_distils_the_shipped_dit():
    def batch(n, seed, start, frames):
        videos, _, captions = make_video_batch(n, seed, 32, frames=frames, start=start)
        return videos, captions

    cfg = TrainConfig(steps=1, batch_size=1, warmup=1, image_steps=2, image_batch_size=4)
    model, log = train_tiny_stdit(TinySTDiTConfig(), cfg, batch, progress=False)
    assert log["image"]["steps_run"] == 2 and log["video"]["steps_run"] == 1
    assert torch.isfinite(torch.tensor(log["image"]["final_loss_avg100"]))
    assert model.stdit.y_embedder.uncond_prob == 0.1  # the video model drops captions again
    small = TrainConfig(init="none", image_steps=1)
    with pytest.raises(ValueError, match="the DiT teacher draws 32px images, the STDiT 16px"):
        train_tiny_stdit(SMALL, small, batch, progress=False)


def test_training_script_saves_snapshots_of_the_video_stage(tmp_path):
    script = load_script("train_tiny_stdit")
    out = tmp_path / "m.safetensors"
    flags = "--image-steps 1 --image-batch-size 2 --steps 3 --batch-size 1 --warmup 1"
    script.main([*flags.split(), "--no-progress", "--snapshot-steps", "2", "--out", str(out)])
    snapshot = json.loads((tmp_path / "m.video2.json").read_text())
    assert snapshot["video_steps"] == 2 and snapshot["train"]["steps"] == 3
    assert json.loads(out.with_suffix(".json").read_text())["log"]["video"]["steps_run"] == 3
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "m.safetensors",
        "m.video2.safetensors",
    ]
    load_tiny_stdit(tmp_path / "m.video2.safetensors")


def test_training_from_a_dit_that_does_not_fit_says_so():
    def batch(n, seed, start, frames):
        raise AssertionError("no step may run")

    with pytest.raises(ValueError, match="the DiT has 8 blocks, the STDiT 4"):
        train_tiny_stdit(SMALL, TrainConfig(init="dit"), batch, progress=False)
    with pytest.raises(ValueError, match="init must be 'dit' or 'none'"):
        train_tiny_stdit(SMALL, TrainConfig(init="pixart"), batch, progress=False)


def test_sampler_makes_videos_and_blockdance_skips_blocks():
    torch.manual_seed(0)
    model = SMALL.build().eval()
    with torch.no_grad():  # adaLN-single and zeroed outputs: give the blocks an effect
        for p in model.stdit.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    request = GenerateRequest((0, 1), 8)
    base = _sampler(model)(request)
    assert base.shape == (2, 4, 3, 16, 16)
    sampler = _sampler(model)
    with blockdance.attach(sampler, "none") as handle:
        assert handle.architecture.name == "stdit"
        assert torch.equal(sampler(request), base)
    with blockdance.attach(sampler, "blockdance", N=2, boundary=1) as handle:
        fast = sampler(request)
    assert handle.stats.num_steps == 8 and handle.stats.saved_fraction > 0
    assert not torch.equal(fast, base)


def test_sampler_samples_a_training_mode_model_as_in_eval_mode():
    # caption dropout is on in training mode: sampled so, every caption would be the null
    torch.manual_seed(0)
    model = TinySTDiTConfig(**{**SMALL.__dict__, "class_dropout_prob": 1.0}).build()
    with torch.no_grad():  # zeroed outputs (cross-attention too): let the caption matter
        for p in model.stdit.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    request = GenerateRequest((0, 1), 4)
    reference = _sampler(model.eval())(request)
    dropped = _sampler(model)  # as the training-mode model would give without eval():
    with torch.no_grad():
        null = model.stdit.y_embedder.null(2)
        model.encode = lambda captions: null  # type: ignore[method-assign]
        all_null = dropped(request)
    del model.encode
    assert not torch.allclose(all_null, reference)  # the captions do matter here
    model.train()
    assert torch.equal(_sampler(model)(request), reference)
    assert model.training  # and the mode is given back


CARD = DEFAULT_WEIGHTS.parent / "TINY_STDIT_CARD.md"


def test_shipped_weights_match_their_card():
    sampler = tiny_stdit_sampler()
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert sampler.model.cfg.frames == meta["config"]["frames"] >= 8
    assert len(sampler.transformer.blocks) == meta["config"]["depth"] >= 8
    stages = meta["log"]
    assert stages["image"]["wall_minutes"] + stages["video"]["wall_minutes"] <= 40
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 2**20
    card = CARD.read_text()
    assert meta["command"] in card
    for stage in ("image", "video"):
        assert f"{stages[stage]['steps_run']} steps" in card


class _ConstantTeacher(torch.nn.Module):
    """A stand-in DiT whose ε for class ``c`` is ``(c + 1) / 20`` everywhere."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((y.float() + 1) / 20).view(-1, 1, 1, 1).expand_as(x)


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_image_stage_distils_the_teachers_guided_eps(dropout: float) -> None:
    from blockdance_lab.data.shapes import make_batch, num_classes
    from blockdance_lab.zoo.stdit.tiny import _distill_loss

    cfg = TinySTDiTConfig(
        frames=1, image_size=16, hidden_size=32, depth=2, num_heads=2, text_dim=16,
        class_dropout_prob=dropout,
    )  # fmt: skip
    model = cfg.build().eval()  # its output layer starts at zero: ε = 0, loss = mean(target²)
    train = TrainConfig(batch_size=6, min_snr=0.0)
    w = 1.5
    loss_fn = _distill_loss(_ConstantTeacher(), train, 16, 0.0, "cpu", teacher_guidance=w)
    loss = loss_fn(model, 0, torch.Generator().manual_seed(0))
    _, labels, _ = make_batch(6, train.seed, 16, start=0)
    null = (num_classes + 1) / 20
    if dropout == 0.0:  # every caption kept: the teacher guided at w
        target = null + w * ((labels.double() + 1) / 20 - null)
    else:  # every caption dropped: the teacher's null ε, unguided
        target = torch.full((6,), null, dtype=torch.double)
    torch.testing.assert_close(
        float(loss.detach()), float(target.square().mean()), rtol=1e-5, atol=0
    )


@dataclass
class _DrawsTheWord:
    """A stand-in sampler: a square moving the way its caption says, or, with ``reads=False``,
    always to the right."""

    captions: Callable[[Sequence[int]], list[str]] = seed_captions
    reads: bool = True

    def __call__(self, request: GenerateRequest) -> torch.Tensor:
        steps = {"left": (-3, 0), "right": (3, 0), "up": (0, -3), "down": (0, 3)}
        videos = torch.zeros(len(request.seeds), 8, 3, 32, 32)  # (N, F, C, H, W)
        for i, caption in enumerate(self.captions(request.seeds)):
            word = next(w for w in caption.split() if w in steps) if self.reads else "right"
            dx, dy = steps[word]
            for f in range(8):
                x, y = 12 + dx * (f - 4), 12 + dy * (f - 4)
                videos[i, f, :, y : y + 6, x : x + 6] = 1.0
        return videos


@pytest.mark.parametrize("reads", [True, False])
def test_swap_control_tells_a_model_that_reads_the_word(reads: bool) -> None:
    from blockdance_lab.data.shapes import DIRECTIONS
    from blockdance_lab.evaluation.motion import motion_direction
    from blockdance_lab.zoo.workloads import seed_directions

    script = load_script("eval_tiny_stdit_directions")
    sampler, seeds = _DrawsTheWord(reads=reads), tuple(range(8))
    asked = seed_directions(seeds)
    moved = motion_direction(sampler(GenerateRequest(seeds, 1)))
    control = script._swap_control(sampler, seeds, 1, asked, moved)
    # the word read: every shape turns; ignored: none does, and the swapped word is met only
    # where it asks for "right" (seeds asking "left")
    assert control["direction_changed_by_word"] == (1.0 if reads else 0.0)
    expected = 1.0 if reads else float((asked == 0).float().mean())
    assert control["swapped_direction_accuracy"] == expected
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    assert control["directions_drawn_swapped"] == [
        opposite[DIRECTIONS[int(a)]] if reads else "right" for a in asked
    ]


def test_direction_eval_compares_with_the_clips_the_weights_were_trained_on(tmp_path) -> None:
    script = load_script("eval_tiny_stdit_directions")
    weights = tmp_path / "pilot.safetensors"
    assert script._trained_on(weights) == {}  # no sidecar: the shipped model's clips
    weights.with_suffix(".json").write_text(
        json.dumps({"train": {"shape_size": "image", "motion": "crossing"}})
    )
    assert script._trained_on(weights) == {"shape_size": "image", "motion": "crossing"}
    assert script._trained_on(DEFAULT_WEIGHTS)["motion"] == "fixed"  # run 9's clips


def test_direction_eval_samples_under_a_reuse_policy(tmp_path, monkeypatch) -> None:
    script = load_script("eval_tiny_stdit_directions")
    real = script.make_video_batch  # FD references of 16 clips instead of 1,024, for time
    monkeypatch.setattr(script, "make_video_batch", lambda n, **kw: real(16, **kw))
    out = {name: tmp_path / f"{name}.json" for name in ("none", "blockdance")}
    common = [str(DEFAULT_WEIGHTS), "--samples", "2", "--steps", "8", "--swap-control"]
    script.main([*common, "--out", str(out["none"])])
    policy = '{"kind": "blockdance", "N": 2, "window": [0.0, 1.0]}'
    script.main([*common, "--policy", policy, "--out", str(out["blockdance"])])
    full, reused = (json.loads(path.read_text()) for path in out.values())
    assert full["policy"] == "none" and full["saved_fraction"] == 0.0
    assert reused["policy"] == {"kind": "blockdance", "N": 2, "window": [0.0, 1.0]}
    assert reused["saved_fraction"] > 0.2  # both generations (asked and swapped word) reused
    with pytest.raises(SystemExit):
        script.main([*common, "--policy", "{not json"])


def test_shipped_model_moves_the_shape_the_way_its_caption_says() -> None:
    from blockdance_lab.data.shapes import opposite_direction
    from blockdance_lab.evaluation.motion import motion_direction
    from blockdance_lab.zoo.workloads import seed_directions

    sampler, seeds = tiny_stdit_sampler(), tuple(range(4))  # every direction once
    asked = seed_directions(seeds)
    with torch.inference_mode():
        moved = motion_direction(sampler(GenerateRequest(seeds, 20)))
        captions = sampler.captions
        sampler.captions = lambda s: [opposite_direction(c) for c in captions(s)]
        turned = motion_direction(sampler(GenerateRequest(seeds, 20)))
    # read from the pixels: the asked direction (run 9: 16 of 16 at 20 steps; chance 1/4),
    # and a different one from the same noise when the word is swapped
    assert (moved == asked).sum() >= 3, moved
    assert (turned != moved).sum() >= 3, (moved, turned)
