"""The zoo's recipes: one entry point trains every tiny model with the old scripts' flags."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import pytest
import torch

from blockdance_lab.zoo.train import RECIPES, add_recipe_arguments, main, recipe
from repo_files import load_script

#: Each old script's flags (before the recipes), with their defaults, besides the train
#: config's own and --threads, --device, --no-progress.
OLD_FLAGS = {
    "dit": {"hidden": 128, "depth": 8, "heads": 4, "mlp_ratio": 2.0},
    "sd3": {"layers": 8},
    "stdit": {"depth": 8, "frames": 8, "snapshot_steps": []},
}


def _parse(name: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser, recipe(name))
    return parser.parse_args(argv)


@pytest.mark.parametrize("name", RECIPES)
def test_flags_default_to_the_shipped_run(name):
    found = recipe(name)
    args = _parse(name, [])
    shipped = json.loads(found.files.shipped.with_suffix(".json").read_text())
    train = {k: v for k, v in vars(args).items() if k in asdict(found.train_config())}
    assert train == {k: v for k, v in shipped["train"].items() if k != "extra"}
    assert args.out == found.files.shipped and args.threads == 2 and args.device == "cpu"
    for flag, value in OLD_FLAGS[name].items():
        assert getattr(args, flag) == value
    config = found.files.config(**shipped["config"])
    assert config == found.files.config()  # the architecture flags' defaults are the shipped


def test_architecture_flags_reach_the_model_config():
    args = _parse("dit", ["--hidden", "64", "--depth", "3", "--heads", "2", "--mlp-ratio", "4"])
    assert (args.hidden, args.depth, args.heads, args.mlp_ratio) == (64, 3, 2, 4.0)
    assert _parse("sd3", ["--layers", "3"]).layers == 3
    assert _parse("stdit", ["--snapshot-steps", "2", "5"]).snapshot_steps == [2, 5]
    video = _parse("stdit", ["--frame-embed", "--prediction", "v_prediction"])
    assert (video.frame_embed, video.prediction) == (True, "v_prediction")
    # a bool flag is a switch: "--frame-embed False" would have read the string as True
    assert _parse("stdit", ["--frame-embed", "--no-frame-embed"]).frame_embed is False
    with pytest.raises(SystemExit):
        _parse("stdit", ["--frame-embed", "False"])
    with pytest.raises(SystemExit):
        _parse("dit", ["--snapshot-steps", "2"])  # only the STDiT has stages to snapshot


def test_entry_point_and_old_script_train_the_same_and_record_their_command(tmp_path):
    flags = ["--steps", "2", "--batch-size", "2", "--warmup", "1", "--depth", "1", "--hidden",
             "32", "--heads", "2", "--no-progress"]  # fmt: skip
    main(["dit", *flags, "--out", str(tmp_path / "new.safetensors")])
    load_script("train_tiny_dit").main([*flags, "--out", str(tmp_path / "old.safetensors")])
    new = json.loads((tmp_path / "new.json").read_text())
    old = json.loads((tmp_path / "old.json").read_text())
    assert new["command"].startswith("python -m blockdance_lab.zoo.train dit --steps 2")
    assert old["command"].startswith("python scripts/train_tiny_dit.py --steps 2")
    assert new["config"] == old["config"] and new["config"]["depth"] == 1
    assert new["train"] == old["train"] and new["log"]["steps_run"] == 2
    a, b = (
        recipe("dit").files.load(tmp_path / "new.safetensors"),
        recipe("dit").files.load(tmp_path / "old.safetensors"),
    )
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=k)


@pytest.mark.parametrize("name", RECIPES)
def test_loading_names_the_entry_point_and_the_script(name, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        recipe(name).files.load(tmp_path / "absent.safetensors")
    assert f"python -m blockdance_lab.zoo.train {name}" in str(info.value)
    assert f"scripts/train_tiny_{name}.py" in str(info.value)
