"""``--plugin MODULE[:OBJECT]`` on every command, and ``blockdance list`` naming each entry's
plugin and each policy's options with their types and defaults."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

import blockdance
from blockdance.cli import main

#: A policy in a module file of its own, as a researcher writes one before packaging it.
POLICY_MODULE = """
from typing import Literal

from pydantic import Field

import blockdance
from blockdance import Decision, Policy, PolicyConfig


class RampConfig(PolicyConfig):
    kind: Literal["cli-ramp"] = "cli-ramp"
    k: int = Field(3, ge=2, description="Reuse every k-th step.")
    warmup: float = Field(0.25, ge=0.0, lt=1.0)
    label: str | None = None
    steps: list[int]


class RampPolicy(Policy[RampConfig]):
    config_class = RampConfig

    def decide(self, ctx, slot):
        return Decision.COMPUTE


class Plugin:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register):
        register(RampConfig, RampPolicy)


PLUGIN = Plugin()
NOT_A_PLUGIN = {"k": 3}


class Unmarked:
    def blockdance_register_policies(self, register):
        register(RampConfig, RampPolicy)
"""

#: A module that is a plugin itself (module-level hook), and adds a command.
COMMAND_MODULE = """
import blockdance


class FlatConfig(blockdance.PolicyConfig):
    kind: str = "cli-flat"


class FlatPolicy(blockdance.Policy[FlatConfig]):
    config_class = FlatConfig

    def decide(self, ctx, slot):
        return blockdance.Decision.COMPUTE


@blockdance.hookimpl
def blockdance_register_policies(register):
    register(FlatConfig, FlatPolicy)


def show(args):
    kinds = blockdance.default_registry().policy_kinds
    print("kinds:", " ".join(sorted(k for k in kinds if k.startswith("cli-"))))
    return 0


@blockdance.hookimpl
def blockdance_add_commands(subparsers):
    p = subparsers.add_parser("cli-kinds", help="the cli-* policy kinds")
    p.set_defaults(func=show)
"""

MODULES = {
    "bd_ramp": POLICY_MODULE,
    "bd_flat": COMMAND_MODULE,
    "bd_empty": "X = 1\n",
    "bd_broken": "raise RuntimeError('boom at import')\n",
    "bd_misspelt": (
        "import blockdance\n\n\n@blockdance.hookimpl\n"
        "def blockdance_register_policy(register):\n    pass\n"
    ),
}


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch) -> Path:
    """Module files in a fresh working directory; registry, sys.path and modules restored."""
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    blockdance.reload_plugins()
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)
    blockdance.reload_plugins()


def columns(line: str) -> list[str]:
    """A listing line split at runs of two or more spaces."""
    return re.split(r"\s{2,}", line.strip())


def policy_block(out: str, kind: str) -> list[str]:
    """The ``policies:`` line of ``kind`` and the option lines under it."""
    lines = out.splitlines()
    (start,) = [i for i, ln in enumerate(lines) if ln.startswith(f"  {kind} ")]
    block = [lines[start]]
    for ln in lines[start + 1 :]:
        if not ln.startswith("    "):  # the next policy, or the next section
            break
        block.append(ln)
    return block


RAMP_OPTIONS = [  # name, type (constraints), default column; then the description
    ["k", "int (>= 2)", "default 3"],
    ["warmup", "float (>= 0.0, < 1.0)", "default 0.25"],
    ["label", "str | None", "default None"],
    ["steps", "list[int]", "required"],
]


@pytest.mark.parametrize(
    "argv",
    [
        ["--plugin", "bd_ramp:Plugin", "list"],
        ["list", "--plugin", "bd_ramp:Plugin"],
        ["list", "--plugin=bd_ramp:Plugin"],
        ["list", "--plug", "bd_ramp:Plugin"],  # argparse's abbreviation, read after parsing
    ],
    ids=["before", "after", "equals", "abbreviated"],
)
def test_plugin_option_registers_a_policy_that_list_shows_with_its_options(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    head, *options = policy_block(out, "cli-ramp")
    assert columns(head) == [
        "cli-ramp",
        "options: k, warmup, label, steps",
        "[plugin bd_ramp:Plugin]",
    ]
    assert (
        [columns(ln) for ln in options]
        == [
            RAMP_OPTIONS[0],
            ["Reuse every k-th step."],  # k's description, the only one
            *RAMP_OPTIONS[1:],
        ]
    )
    # the plugins section says what the name stands for: an instance, from this file
    (plugin_line,) = [ln for ln in out.splitlines() if ln.startswith("  bd_ramp:Plugin ")]
    assert columns(plugin_line)[1] == (f"bd_ramp.Plugin instance ({Path.cwd() / 'bd_ramp.py'})")
    assert blockdance.default_registry().policy_owner("cli-ramp") == "bd_ramp:Plugin"


def test_list_json_gives_each_option_its_type_default_and_description(capsys):
    assert main(["list", "--json", "--plugin", "bd_ramp:PLUGIN"]) == 0
    data = json.loads(capsys.readouterr().out)
    (ramp,) = [p for p in data["policies"] if p["kind"] == "cli-ramp"]
    assert ramp["plugin"] == "bd_ramp:PLUGIN"
    assert ramp["config"] == "bd_ramp.RampConfig"
    assert ramp["options"] == [
        {
            "name": "k",
            "type": "int",
            "constraints": [">= 2"],
            "required": False,
            "default": 3,
            "description": "Reuse every k-th step.",
        },
        {
            "name": "warmup",
            "type": "float",
            "constraints": [">= 0.0", "< 1.0"],
            "required": False,
            "default": 0.25,
            "description": None,
        },
        {
            "name": "label",
            "type": "str | None",
            "constraints": [],
            "required": False,
            "default": None,
            "description": None,
        },
        {
            "name": "steps",
            "type": "list[int]",
            "constraints": [],
            "required": True,
            "default": None,
            "description": None,
        },
    ]
    (plugin,) = [p for p in data["plugins"] if p["name"] == "bd_ramp:PLUGIN"]
    assert plugin["distribution"] is None
    assert plugin["file"] == str(Path.cwd() / "bd_ramp.py")


def test_plugins_before_and_after_a_command_a_plugin_added_are_all_registered(capsys):
    # bd_flat is a module plugin that adds the command cli-kinds: given before the command, it
    # is registered before the parser is built; the command, added later, takes --plugin too
    argv = ["--plugin", "bd_flat", "cli-kinds", "--plugin", "bd_ramp:Plugin"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["kinds: cli-flat cli-ramp"]
    registry = blockdance.default_registry()
    assert registry.policy_owner("cli-flat") == "bd_flat"
    assert registry.policy_owner("cli-ramp") == "bd_ramp:Plugin"


def test_the_same_plugin_twice_is_registered_once(capsys):
    assert main(["--plugin", "bd_ramp:Plugin", "list", "--plugin", "bd_ramp:Plugin"]) == 0
    assert "[plugin bd_ramp:Plugin]" in capsys.readouterr().out


def test_every_lab_command_takes_the_plugin_option(capsys):
    pytest.importorskip("blockdance_lab")
    for command in ("workloads", "demo", "bench", "analyze", "calibrate"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "--plugin MODULE[:OBJECT]" in capsys.readouterr().out, command
    assert main(["workloads", "--plugin", "bd_ramp:Plugin"]) == 0
    assert blockdance.default_registry().policy_owner("cli-ramp") == "bd_ramp:Plugin"


def test_help_says_the_working_directory_is_put_on_sys_path(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--plugin MODULE[:OBJECT]" in out
    assert "working directory is put on sys.path" in out


# -- bad --plugin values: one line on stderr, exit 2, nothing registered ---------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "bd_nosuch:Plugin",
            [
                "cannot import module 'bd_nosuch'",
                "No module named 'bd_nosuch'",
                "put bd_nosuch.py",
                "PYTHONPATH",
            ],
        ),
        ("bd_broken", ["importing module 'bd_broken' failed: RuntimeError: boom at import"]),
        (
            "bd_ramp:Nope",
            [
                "has no attribute 'Nope'",
                "its public names: RampConfig, RampPolicy, Plugin, PLUGIN, NOT_A_PLUGIN, Unmarked;",
                "of these, Plugin, PLUGIN implement blockdance hooks",
            ],
        ),
        (
            "bd_ramp:NOT_A_PLUGIN",
            [
                "bd_ramp.NOT_A_PLUGIN (an instance of dict) is not a blockdance plugin",
                "blockdance_register_policies",
                "@blockdance.hookimpl",
            ],
        ),
        (
            "bd_ramp:Unmarked",
            ["blockdance_register_policies is named like a hook but lacks the @blockdance"],
        ),
        ("bd_empty", ["module 'bd_empty'", "is not a blockdance plugin"]),
        ("bd_misspelt", ["--plugin bd_misspelt: unknown hook 'blockdance_register_policy'"]),
        ("bd_ramp:", ["give MODULE or MODULE:OBJECT"]),
        ("./bd_ramp.py:Plugin", ["is a file path", "--plugin bd_ramp:OBJECT"]),
    ],
    ids=[
        "no-module",
        "import-fails",
        "no-object",
        "not-a-plugin",
        "unmarked-hook",
        "module-without-hooks",
        "misspelt-hook",
        "no-object-name",
        "file-path",
    ],
)
def test_a_bad_plugin_option_says_what_is_wrong_and_what_to_do(spec, expected, capsys):
    before = {name for name, _ in blockdance.default_registry().pm.list_name_plugin()}
    assert main(["list", "--plugin", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("blockdance: error: --plugin ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, (text, err)
    after = {name for name, _ in blockdance.default_registry().pm.list_name_plugin()}
    assert after == before


def test_a_missing_module_names_the_working_directory(capsys, workdir):
    assert main(["--plugin", "bd_nosuch", "list"]) == 2
    assert f"working directory ({workdir})" in capsys.readouterr().err


# -- list names the plugin behind the built-ins and the DiT -------------------------------------
def test_list_names_the_plugin_of_the_built_in_policies_and_of_the_dit(capsys):
    pytest.importorskip("blockdance_dit")
    dit = importlib.metadata.distribution("blockdance-dit")
    core_version = importlib.metadata.version("blockdance")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    architectures = lines[lines.index("architectures:") + 1 : lines.index("policies:")]
    (dit_line,) = [ln for ln in architectures if ln.startswith("  dit ")]
    assert dit_line.endswith("[plugin dit]")
    head, *options = policy_block(out, "blockdance")
    assert head.endswith("[built-in]")
    rows = [ln for ln in options if not ln.startswith(" " * 7)]  # descriptions: indented more
    assert [columns(ln) for ln in rows] == [
        ["N", "int (>= 1)", "default 2"],
        ["boundary", "int | None (>= 0)", "default None"],
        ["window", "tuple[float, float] | None", "default None"],
    ]
    plugins = lines[lines.index("plugins:") + 1 : lines.index("architectures:")]
    by_name = {columns(ln)[0]: columns(ln)[1] for ln in plugins}
    assert by_name["dit"] == f"blockdance-dit {dit.version}: blockdance_dit.plugin"
    assert by_name["built-in"] == (
        f"blockdance {core_version}: blockdance.policies.BuiltinPolicies instance"
    )


def test_list_json_names_the_distribution_of_each_entry_point_plugin(capsys):
    pytest.importorskip("blockdance_dit")
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {a["name"]: a["plugin"] for a in data["architectures"]}["dit"] == "dit"
    assert {p["kind"]: p["plugin"] for p in data["policies"]}["blockdance"] == (
        "blockdance.builtin_policies"
    )
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["dit"]["distribution"] == "blockdance-dit"
    assert plugins["dit"]["object"] == "blockdance_dit.plugin"
    assert plugins["blockdance.builtin_policies"]["distribution"] == "blockdance"
