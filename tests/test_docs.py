"""The docs stay true: every hook documented, every public name mentioned, examples run."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

import blockdance
import blockdance_lab.plugin
from blockdance.hookspecs import all_hookspec_names
from blockdance.testing import make_registry
from repo_files import load_example
from toymodel import ToyPlugin, run

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE_PLUGIN = ROOT / "examples" / "blockdance-encoder"
FILE_MARKER = re.compile(
    r"<!-- file: (?P<path>\S+) -->\n+```[\w-]*\n(?P<code>.*?)^```", re.M | re.S
)


def doc_text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md")))


def code_in(markdown: str) -> str:
    """Fenced blocks and inline code spans: where API names are written as code."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.M | re.S)
    inline = re.findall(r"`([^`\n]+)`", prose)
    return "\n".join(fenced + inline)


# -- (a) hooks ---------------------------------------------------------------------------
def hook_names() -> set[str]:
    """Hooks the plugin manager knows, and the specs the hookspecs module defines."""
    registry = make_registry(("lab", blockdance_lab.plugin))  # the lab adds its workload hook
    from_pm = {name for name in vars(registry.pm.hook) if name.startswith("blockdance_")}
    return from_pm | set(all_hookspec_names())


def test_every_hookspec_has_a_heading_in_plugin_hooks():
    headings = set(re.findall(r"^## (\S+)\s*$", doc_text("plugin-hooks.md"), re.M))
    names = hook_names()
    assert names, "no hookspecs found"
    missing = sorted(names - headings)
    assert not missing, f"hooks not documented in docs/plugin-hooks.md: {missing}"
    stale = sorted(h for h in headings if h.startswith("blockdance_") and h not in names)
    assert not stale, f"docs/plugin-hooks.md documents hooks that do not exist: {stale}"


# -- (b) public names ------------------------------------------------------------------------
PUBLIC = sorted(name for name in blockdance.__all__ if not name.startswith("__"))


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_mentioned_in_docs(name):
    """Every name in ``blockdance.__all__`` except ``__version__``, exceptions included."""
    assert re.search(rf"\b{re.escape(name)}\b", code_in(all_docs())), (
        f"blockdance.{name} is not mentioned (as code) anywhere under docs/"
    )


def test_relative_links_resolve():
    for page in DOCS.rglob("*.md"):
        prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


# -- (d) code shown in the tutorials is the code in the repo ----------------------------------
@pytest.mark.parametrize("page", ["plugin-tutorial.md", "policy-tutorial.md"])
def test_tutorial_code_blocks_match_files(page):
    shown = FILE_MARKER.findall(doc_text(page))
    assert shown, f"{page} shows no file"
    for path, code in shown:
        actual = (ROOT / path).read_text(encoding="utf-8")
        assert code == actual, f"{page}: the block for {path} differs from the file; update one"


def test_plugin_tutorial_shows_every_file_of_the_example_package():
    shown = {path for path, _ in FILE_MARKER.findall(doc_text("plugin-tutorial.md"))}
    files = {
        p.relative_to(ROOT).as_posix()
        for pattern in ("pyproject.toml", "blockdance_encoder/*.py", "tests/*.py")
        for p in EXAMPLE_PLUGIN.glob(pattern)
    }
    assert files and files <= shown, f"not shown in the tutorial: {sorted(files - shown)}"


# -- (c) the policy tutorial's example ---------------------------------------------------------
def load_every_k() -> ModuleType:
    return load_example("every_k_policy")


@pytest.fixture
def every_k_registry() -> blockdance.Registry:
    return make_registry(
        ("toy-plugin", ToyPlugin()), ("every-k-plugin", load_every_k().EveryKPlugin())
    )


def x0() -> torch.Tensor:
    return torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))


T = 20
BOUNDARY = 5  # toy model: 8 blocks, default boundary round(21/28 * 8) - 1


@pytest.mark.parametrize(
    ("options", "steps", "boundary"),
    [
        ({}, {7, 10, 13, 16, 19}, BOUNDARY),  # k=3, warm-up 25%: first = 5
        ({"k": 2, "warmup": 0.5, "boundary": 2}, {11, 13, 15, 17, 19}, 2),
        ({"k": 4, "warmup": 0.0}, {3, 7, 11, 15, 19}, BOUNDARY),
    ],
)
def test_policy_tutorial_example(toy, every_k_registry, options, steps, boundary):
    with blockdance.attach(
        toy, "every-k", registry=every_k_registry, num_steps=T, **options
    ) as handle:
        got = run(toy, x0(), T)
        assert len(handle.runtime.cache) <= 1
    expected = {(s, b) for s in steps for b in range(boundary + 1)}
    assert handle.stats.reused_pairs() == expected

    # the same table as an explicit schedule gives bit-identical outputs
    table = {s: f"0-{boundary}" for s in steps}
    with blockdance.attach(toy, "schedule", reuse=table, registry=every_k_registry):
        want = run(toy, x0(), T)
    for step, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"step {step} differs from the equivalent schedule"


def test_policy_tutorial_example_needs_the_step_count(toy, every_k_registry):
    with blockdance.attach(toy, "every-k", registry=every_k_registry):
        with pytest.raises(blockdance.NumStepsRequiredError, match="every-k"):
            run(toy, x0(), 2)


def test_policy_tutorial_example_rejects_bad_options(every_k_registry):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="k"):
        every_k_registry.make_policy("every-k", k=1)
    with pytest.raises(ValidationError, match="extra"):
        every_k_registry.make_policy("every-k", K=3)


def test_policy_tutorial_example_refuses_a_boundary_without_deep_blocks(toy, every_k_registry):
    with blockdance.attach(toy, "every-k", boundary=7, registry=every_k_registry) as handle:
        with pytest.raises(ValueError, match="no deep block"), handle.generation(num_steps=T):
            pass
