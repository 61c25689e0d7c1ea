"""Shared fixtures: a random-weight FID Inception checkpoint in pytorch-fid's layout."""

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from infinity_eval.fid import FIDInceptionV3

FIXTURES = Path(__file__).parent / "fixtures"


def he_init_(model: torch.nn.Module) -> torch.nn.Module:
    """He-normal conv weights: activations stay O(1) through the 94 layers (torch's default init shrinks them
    into denormal floats, which makes CPU convolutions very slow and the features meaningless)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0, (2.0 / fan_in) ** 0.5)
    return model


@pytest.fixture(scope="session")
def random_fid_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = he_init_(FIDInceptionV3())
    path = tmp_path_factory.mktemp("fidw") / "pt_inception-2015-12-05-6726825d.pth"
    # pytorch-fid's file comes from an old torch: no BatchNorm num_batches_tracked entries
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


@pytest.fixture
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    import fake_plugins

    fake_plugins.CALLS.clear()
    return fake_plugins


@pytest.fixture(scope="session")
def he_init():
    return he_init_


def low_rank_sqrtm(matrix: np.ndarray, rank: int = 8) -> np.ndarray:
    """sqrtm restricted to range(M) for products of low-rank covariances (N < dim): returns a small matrix whose
    trace equals Tr sqrtm(M). A test-only stand-in: SciPy's 2048x2048 sqrtm takes minutes on a busy 2-core CI
    machine; `test_low_rank_sqrtm_stand_in_matches_scipy_trace` checks it against SciPy."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(matrix @ rng.normal(size=(matrix.shape[0], rank)))
    return scipy.linalg.sqrtm(q.T @ matrix @ q)


@pytest.fixture
def fast_sqrtm(monkeypatch):
    monkeypatch.setattr("infinity_eval.fid.frechet._sqrtm", low_rank_sqrtm)
    return low_rank_sqrtm
