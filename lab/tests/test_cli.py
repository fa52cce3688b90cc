"""The command line: list and demo (on the random-weight workload, few seeds and steps)."""

from __future__ import annotations

import json

import pytest

from blockdance.cli import build_parser, main
from blockdance_lab.cli import demo_note, demo_plan
from blockdance_lab.workload import get_workload

SHIPPED = ("dit-tiny-shapes", "sd3-tiny-shapes", "stdit-tiny-shapes")


def _plans(*flags: str) -> dict[str, tuple[int, int, int]]:
    """``(seeds, steps, repeats)`` per shipped workload for ``blockdance demo FLAGS``."""
    args = build_parser().parse_args(["demo", *flags])
    return {name: demo_plan(args, get_workload(name)) for name in SHIPPED}


def test_demo_defaults_to_a_quick_run_on_every_shipped_model():
    # the quick demo: 8 images per image model, 2 videos, one timed repeat, 50 steps
    assert _plans() == {
        "dit-tiny-shapes": (8, 50, 1),
        "sd3-tiny-shapes": (8, 50, 1),
        "stdit-tiny-shapes": (2, 50, 1),
    }


def test_demo_full_is_the_readme_full_tables():
    # the README's --full tables: 64 images, 16 videos, 3 timed repeats, 50 steps
    assert _plans("--full") == {
        "dit-tiny-shapes": (64, 50, 3),
        "sd3-tiny-shapes": (64, 50, 3),
        "stdit-tiny-shapes": (16, 50, 3),
    }


@pytest.mark.parametrize("preset", [[], ["--full"]])
def test_demo_explicit_flags_override_quick_and_full(preset):
    flags = [*preset, "--seeds", "5", "--repeats", "2", "--steps", "20"]
    assert set(_plans(*flags).values()) == {(5, 20, 2)}
    # one flag alone leaves the preset's other defaults
    repeats = 3 if preset else 1
    assert _plans(*preset, "--seeds", "2")["sd3-tiny-shapes"] == (2, 50, repeats)


def test_demo_note_says_how_much_and_how_noisy():
    quick = build_parser().parse_args(["demo"])
    note = demo_note(quick, get_workload("stdit-tiny-shapes"), 2, 1)
    assert "2 videos (seeds 0..1)" in note and "1 timed repeat" in note
    assert "noisy" in note and "ideal column" in note and "exact" in note
    assert "blockdance demo --full (16 videos, 3 repeats)" in note
    full = build_parser().parse_args(["demo", "--full"])
    note = demo_note(full, get_workload("dit-tiny-shapes"), 64, 3)
    assert "64 images (seeds 0..63)" in note and "3 interleaved timed repeats" in note
    assert "--full (" not in note and "rough" not in note


def test_list_shows_plugins_policies_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("dit", "pixart-alpha", "blockdance", "schedule", "DiT-XL/2"):
        assert word in out


def test_workloads_lists_the_zoo_with_its_plugin(capsys):
    assert main(["workloads"]) == 0
    out = capsys.readouterr().out
    for name in ("dit-tiny-shapes", "dit-s2", "sd3-tiny-shapes", "stdit-tiny-shapes"):
        assert f"  {name} " in out
    assert "[plugin lab]" in out


def test_demo_writes_table_json_and_map(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--workload",
            "dit-s2",
            "--seeds",
            "2",
            "--steps",
            "8",
            "--repeats",
            "1",
            "--n",
            "2",
            "--policy",
            '{"kind": "schedule", "reuse": {"5": "0-3"}}',
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "blockdance N=2" in text and "schedule" in text and "reduction" in text
    assert "quick demo: 2 samples, 8 DDIM steps, 1 timed repeat" in text
    assert "2 samples (seeds 0..1), 1 timed repeat" in text
    out = out / "dit-s2"
    rows = json.loads((out / "demo.json").read_text())
    assert [r["policy"] for r in rows] == ["baseline", "blockdance N=2", "schedule"]
    assert rows[0]["ssim"] == pytest.approx(1.0)
    # 8 steps, window 25%-95% -> steps 2..7, N=2 reuses 3, 5, 7: blocks 0..8 of 12
    assert rows[1]["stats"]["reused_blocks"] == 3 * 9
    assert rows[1]["ideal"] == pytest.approx(27 / 96)
    assert rows[2]["stats"]["reused_blocks"] == 4
    assert (out / "reuse_map.png").stat().st_size > 1000


def test_demo_unknown_workload_lists_registered():
    from blockdance_lab.workload import UnknownWorkloadError

    with pytest.raises(UnknownWorkloadError, match="dit-s2"):
        main(["demo", "--workload", "nope"])


def test_demo_runs_every_shipped_model_with_quality_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--seeds", "4", "--steps", "10", "--repeats", "1", "--n", "2", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    shipped = ["dit-tiny-shapes", "sd3-tiny-shapes", "stdit-tiny-shapes"]
    assert all(f"workload {name}" in text for name in shipped)
    assert text.count("4 images (seeds 0..3), 1 timed repeat") == 2
    assert "4 videos (seeds 0..3), 1 timed repeat" in text
    assert "FD-probe" in text and "accuracy" in text
    for name in shipped:
        rows = json.loads((out / name / "demo.json").read_text())
        assert [r["policy"] for r in rows] == ["baseline", "blockdance N=2"]
        assert 0 <= rows[0]["accuracy"] <= 1 and rows[1]["fd_probe"] > 0
        assert rows[1]["stats"]["reused_blocks"] > 0 and rows[1]["ssim"] < 1.0
        assert (out / name / "samples.png").stat().st_size > 1000
    assert "temporal" in text  # the video model's table
    assert (out / "stdit-tiny-shapes" / "samples.gif").stat().st_size > 1000
    assert "dit-s2" not in text  # random weights: not part of the default demo
