"""Sessions: tests, lint, typecheck, docs, demo, bench.

Run ``nox -s tests`` (what CI runs) or ``nox -s demo``. Dependencies come from
pyproject.toml; torch/torchvision are pinned through constraints.txt.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
EXAMPLE_PLUGIN = "examples/blockdance-encoder"
PYTHON = "3.11"


def install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite, including the tutorial's example plugin installed as a package."""
    install(session, "-e", ".[test]")
    install(session, "-e", EXAMPLE_PLUGIN)
    session.env["OMP_NUM_THREADS"] = session.env.get("OMP_NUM_THREADS", "2")
    # the slow marker is deselected by plain `pytest`; CI runs it too
    session.run("pytest", *(session.posargs or ["-q", "-m", "slow or not slow"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on the core and the first-party plugins."""
    install(session, "-e", ".[lint]")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Docs checks: every hookspec documented, tutorial example plugin works."""
    install(session, "-e", ".[test]")
    install(session, "-e", EXAMPLE_PLUGIN)
    session.run("pytest", "-q", "tests/test_docs.py", f"{EXAMPLE_PLUGIN}/tests")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: BlockDance against the baseline, with statistics."""
    install(session, "-e", ".[plot]")
    session.run("blockdance", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Latency benchmark: BlockDance N=2,3,4 and the `none` overhead, as ratios."""
    install(session, "-e", ".")
    session.run("python", "benchmarks/bench_latency.py", *session.posargs)
