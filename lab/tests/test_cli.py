"""The command line: list and demo (on the random-weight workload, few seeds and steps)."""

from __future__ import annotations

import json

import pytest

from blockdance.cli import main


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
