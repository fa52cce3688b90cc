"""Sessions: tests, core, lint, typecheck, docs, demo, bench.

Run ``nox -s tests`` (what CI runs) or ``nox -s demo``. Dependencies come from the
distributions' pyproject.toml files (the core at the root, the lab in lab/, each plugin in
plugins/); torch/torchvision are pinned through constraints.txt.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "core", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
EXAMPLE_PLUGIN = "examples/blockdance-encoder"
#: The first-party plugins and the lab, each a distribution of its own, found by blockdance
#: only through their entry points. Installed from their folders as a user would.
PLUGINS = ("plugins/blockdance-dit", "plugins/blockdance-mmdit", "plugins/blockdance-stdit")
LAB = "lab"
PYTHON = "3.11"


def install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


def install_all(session: nox.Session, core_extras: str = "", lab_extras: str = "plot") -> None:
    """The core (editable, with ``core_extras``), the plugins, the lab (with ``lab_extras``)
    and the example plugin.

    Two pip calls: pip does not let an editable requirement with extras (``-e .[test]``)
    satisfy the plugins' plain ``blockdance`` requirement in the same call.
    """
    install(session, "-e", f".{core_extras}")
    install(session, *PLUGINS, f"./{LAB}[{lab_extras}]", EXAMPLE_PLUGIN)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: core, lab, plugins and the tutorial's example plugin, each installed.

    The lab's ``peers`` extra (cache-dit, about 6 MB beside the test extra's transformers)
    lets the ``cache-dit:`` baselines' tests run."""
    install_all(session, "[test]", lab_extras="plot,peers")
    session.env["OMP_NUM_THREADS"] = session.env.get("OMP_NUM_THREADS", "2")
    # the slow marker is deselected by plain `pytest`; CI runs it too
    session.run("pytest", *(session.posargs or ["-q", "-m", "slow or not slow"]))


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """The core alone (torch, pydantic, pluggy; no diffusers, no lab) runs a policy on the
    tutorial's example model."""
    install(session, "-e", ".", "pytest>=8")
    install(session, "--no-deps", EXAMPLE_PLUGIN)
    check = (
        "import importlib.util as u, sys; "
        "extra = [m for m in sys.argv[1:] if u.find_spec(m)]; "
        "sys.exit(f'not a core-only venv: {extra} installed' if extra else 0)"
    )
    session.run("python", "-c", check, "diffusers", "blockdance_lab", "timm", "safetensors")
    session.env["OMP_NUM_THREADS"] = session.env.get("OMP_NUM_THREADS", "2")
    session.run("pytest", "-q", "tests/test_core_only.py", f"{EXAMPLE_PLUGIN}/tests")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on the core, the lab and the first-party plugins."""
    install_all(session, "[lint]")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Docs checks: every hookspec documented, tutorial example plugin works."""
    install_all(session, "[test]")
    session.run("pytest", "-q", "tests/test_docs.py", f"{EXAMPLE_PLUGIN}/tests")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: BlockDance against the baseline on each shipped model.

    Quick by default (8 images or 4 videos per model, one timed repeat: minutes on 2 CPU
    cores); ``nox -s demo -- --full`` prints the full tables (64 images, 16 videos, 3 repeats).
    Installs what the demo runs: the core, the plugins and the lab with its plots.
    """
    install(session, "-e", ".")
    install(session, *PLUGINS, f"./{LAB}[plot]")
    session.run("blockdance", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Latency benchmark: BlockDance N=2,3,4 and the `none` overhead, as ratios."""
    install_all(session)
    session.run("python", "benchmarks/bench_latency.py", *session.posargs)
