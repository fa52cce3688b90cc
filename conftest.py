from __future__ import annotations

import pytest
import torch

import blockdance
from toymodel import ToyDenoiser, toy_registry


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread for every test (core, lab, plugins): the models are tiny, and a second
    thread only adds contention (about 50x slower on a busy 2-core box)."""
    torch.set_num_threads(1)


@pytest.fixture
def registry() -> blockdance.Registry:
    return toy_registry()


@pytest.fixture
def toy() -> ToyDenoiser:
    torch.manual_seed(0)
    return ToyDenoiser().eval()
