"""Train a model of the zoo: ``python -m blockdance_lab.zoo.train dit|sd3|stdit [flags]``.

Each model is a :class:`~blockdance_lab.training.Recipe` declared beside it (``RECIPE`` in
``blockdance_lab/zoo/<model>/tiny.py``). The command has a flag per hyper-parameter of the
recipe's train config (``--steps``, ``--batch-size``, …), per architecture option it lists
(e.g. ``--depth``), ``--threads``, ``--device``, ``--no-progress`` and ``--out``; without
flags it reproduces the shipped weights. It saves the EMA model as fp16 safetensors beside a
JSON sidecar holding the config, the hyper-parameters, the training log and the command.
``scripts/train_tiny_<model>.py`` run the same under their old names.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockdance_lab.training import (
    Recipe,
    add_default_argument,
    add_train_arguments,
    save_weights,
    train_config_from,
)

__all__ = ["RECIPES", "add_recipe_arguments", "alias", "main", "recipe", "run_recipe"]

PROG = "python -m blockdance_lab.zoo.train"

#: Each model of the zoo: its name on the command line -> the module declaring its ``RECIPE``.
RECIPES = {
    "dit": "blockdance_lab.zoo.dit.tiny",
    "sd3": "blockdance_lab.zoo.sd3.tiny",
    "stdit": "blockdance_lab.zoo.stdit.tiny",
}


def recipe(name: str) -> Recipe[Any]:
    """The recipe of the zoo's model ``name`` (a key of :data:`RECIPES`)."""
    found: Recipe[Any] = importlib.import_module(RECIPES[name]).RECIPE
    return found


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe: Recipe[Any]) -> None:
    """Add the flags that train ``recipe``, each defaulting to the shipped run's value."""
    add_train_arguments(parser, recipe.train_config)
    shipped = {f.name: f.default for f in fields(recipe.files.config)}
    for flag, name in recipe.model_flags.items():
        add_default_argument(parser, flag, shipped[name])
    parser.add_argument("--out", type=Path, default=recipe.files.shipped)
    if recipe.snapshot_stage is not None:
        parser.add_argument(
            "--snapshot-steps",
            type=int,
            nargs="*",
            default=[],
            help=f"also save the EMA model after these {recipe.snapshot_stage}-stage steps, "
            f"as <out>.{recipe.snapshot_stage}<step>",
        )


def _snapshots(
    recipe: Recipe[Any], args: argparse.Namespace, model_cfg: Any, train: dict[str, Any]
) -> Callable[[int, nn.Module], None] | None:
    """``on_step`` saving the EMA model after the steps ``--snapshot-steps`` asks for."""
    steps = set(getattr(args, "snapshot_steps", None) or ())
    if not steps:
        return None
    stage, out = recipe.snapshot_stage, args.out

    def snapshot(step: int, ema: nn.Module) -> None:
        if step + 1 in steps:
            path = out.with_name(f"{out.stem}.{stage}{step + 1}{out.suffix}")
            save_weights(ema, model_cfg, path, {"train": train, f"{stage}_steps": step + 1})

    return snapshot


def run_recipe(recipe: Recipe[Any], args: argparse.Namespace, command: str) -> Path:
    """Train ``recipe`` as the flags of :func:`add_recipe_arguments` say, then save it.

    Args:
        recipe: What to train.
        args: The parsed flags.
        command: The command line, recorded in the sidecar.

    Returns:
        The weights file written.
    """
    torch.set_num_threads(args.threads)
    model_cfg = recipe.files.config(
        **{name: getattr(args, _dest(flag)) for flag, name in recipe.model_flags.items()}
    )
    cfg = train_config_from(args, recipe.train_config)
    model, log = recipe.train(
        model_cfg,
        cfg,
        progress=not args.no_progress,
        device=args.device,
        on_step=_snapshots(recipe, args, model_cfg, asdict(cfg)),
    )
    meta = {"train": asdict(cfg), "log": log, "command": command}
    save_weights(model, model_cfg, args.out, meta)
    print(json.dumps(log, indent=1))
    print(f"wrote {args.out}")
    return Path(args.out)


def _command(prefix: str, argv: Sequence[str] | None) -> str:
    return (prefix + " " + " ".join(sys.argv[1:] if argv is None else argv)).strip()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m blockdance_lab.zoo.train MODEL [flags]``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train a model of the zoo; without flags, as its weights shipped."
    )
    models = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name in RECIPES:
        found = recipe(name)
        add_recipe_arguments(models.add_parser(name, help=f"the {found.files.family}"), found)
    args = parser.parse_args(argv)
    run_recipe(recipe(args.model), args, _command(PROG, argv))


def alias(name: str, script: str) -> Callable[..., None]:
    """``main(argv)`` of ``script``, the old name of ``python -m blockdance_lab.zoo.train name``
    (the same flags; the sidecar records ``python script``)."""

    def main(argv: Sequence[str] | None = None) -> None:
        found = recipe(name)
        parser = argparse.ArgumentParser(
            prog=script, description=f"Train the {found.files.family} (the same as {PROG} {name})."
        )
        add_recipe_arguments(parser, found)
        run_recipe(found, parser.parse_args(argv), _command(f"python {script}", argv))

    return main


if __name__ == "__main__":
    main()
