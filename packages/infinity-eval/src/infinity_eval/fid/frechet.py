"""Fréchet distance between Gaussians (pytorch-fid `fid_score.py`, `calculate_frechet_distance`) and streaming
float64 feature statistics."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg

__all__ = [
    "FeatureStatistics",
    "frechet_distance",
    "trace_sqrt_product_eig",
]

logger = logging.getLogger(__name__)

SQRTM_EPS = 1e-6
IMAG_TOLERANCE = 1e-3


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # No `disp` argument: deprecated in SciPy 1.17, removed in 1.18.
    return scipy.linalg.sqrtm(matrix)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = SQRTM_EPS
) -> float:
    """d² = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂), in float64, with pytorch-fid's safeguards.

    A non-finite matrix root is recomputed with `eps`·I added to both covariances; a complex root whose
    diagonal has |Im| > 1e-3 raises ValueError, otherwise its real part is used.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"covariances {sigma1.shape} and {sigma2.shape} do not match the mean dimension {mu1.shape[0]}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning("sqrtm(Σ₁Σ₂) is singular; adding %g to the diagonal of both covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag)
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_TOLERANCE):
            raise ValueError(
                f"sqrtm(Σ₁Σ₂) has an imaginary diagonal component of {imag.max():.6g} (> {IMAG_TOLERANCE}); "
                "the covariances are not valid (check the feature statistics)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr √(Σ₁Σ₂) as Σ Re √λᵢ(Σ₁Σ₂) with complex roots (torch-fidelity's cross-check)."""
    eig = np.linalg.eigvals(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    return float(np.sqrt(eig.astype(np.complex128)).real.sum())


def _merge_moments(
    n_a: int, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan, Golub & LeVeque's pairwise update of (N, mean, M2) for two disjoint sets, in float64.

    M2 = Σ (x − mean)(x − mean)ᵀ. Only deviations and the difference of means enter, so a large common
    offset of the features costs no precision (unlike Σxxᵀ − N μμᵀ, which cancels catastrophically).
    """
    n = n_a + n_b
    if n_a == 0:
        return n, mean_b.copy(), m2_b.copy()
    if n_b == 0:
        return n, mean_a.copy(), m2_a.copy()
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
    return n, mean, m2


@dataclass
class FeatureStatistics:
    """Streaming float64 moments of features: count N, mean and M2 = Σ (x − mean)(x − mean)ᵀ.

    Batches and shards combine with Chan's pairwise merge, which stays exact to float64 rounding when the
    features' mean is large compared with their spread. Statistics loaded from a plain pytorch-fid `.npz`
    (mu, sigma only) have `n = None` and cannot be merged.
    """

    dim: int
    n: int | None = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    _mu: np.ndarray | None = None
    _sigma: np.ndarray | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n is not None and self.mean is None:
            self.mean = np.zeros(self.dim, dtype=np.float64)
            self.m2 = np.zeros((self.dim, self.dim), dtype=np.float64)

    def _moments(self) -> tuple[int, np.ndarray, np.ndarray]:
        if self.n is None or self.mean is None or self.m2 is None:
            raise ValueError("these statistics came from mu/sigma only: they cannot be updated or merged")
        return self.n, self.mean, self.m2

    def update(self, features: np.ndarray) -> None:
        """Add a (B, dim) batch of features."""
        n, mean, m2 = self._moments()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (B, {self.dim}), got {x.shape}")
        if x.shape[0] == 0:
            return
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        self.n, self.mean, self.m2 = _merge_moments(n, mean, m2, x.shape[0], batch_mean, centred.T @ centred)

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        if self.dim != other.dim:
            raise ValueError(f"cannot merge statistics of dims {self.dim} and {other.dim}")
        n, mean, m2 = _merge_moments(*self._moments(), *other._moments())
        return FeatureStatistics(dim=self.dim, n=n, mean=mean, m2=m2, meta=dict(self.meta))

    @property
    def mu(self) -> np.ndarray:
        if self._mu is not None:
            return self._mu
        if not self.n or self.mean is None:
            raise ValueError("no features were added")
        return self.mean

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (divides by N − 1)."""
        if self._sigma is not None:
            return self._sigma
        if self.n is None or self.n < 2 or self.m2 is None:
            raise ValueError(f"a covariance needs at least 2 features, got {self.n}")
        return self.m2 / (self.n - 1)

    @classmethod
    def from_features(cls, features: np.ndarray) -> FeatureStatistics:
        x = np.asarray(features)
        stats = cls(dim=x.shape[1])
        stats.update(x)
        return stats

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `.npz` with pytorch-fid's keys `mu`, `sigma`, plus `n` and `m2` (to merge later) and meta."""
        arrays: dict[str, np.ndarray] = {"mu": self.mu, "sigma": self.sigma}
        if self.n is not None and self.m2 is not None:
            arrays.update(n=np.asarray(self.n, dtype=np.int64), m2=self.m2)
        arrays["meta"] = np.asarray(json.dumps(self.meta, sort_keys=True))
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, allow_pickle=False, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureStatistics:
        """Read a file of `save`, an older one with running sums (`sum_x`, `sum_xxt`), or pytorch-fid's."""
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise KeyError(f"{path}: an FID statistics file needs arrays 'mu' and 'sigma'")
            mu = np.asarray(data["mu"], dtype=np.float64)
            sigma = np.asarray(data["sigma"], dtype=np.float64)
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
            if "n" in data and "m2" in data:
                m2 = np.asarray(data["m2"], np.float64)
                return cls(dim=mu.shape[0], n=int(data["n"]), mean=mu, m2=m2, meta=meta)
            if "n" in data and "sum_x" in data and "sum_xxt" in data:
                # infinity-eval 0.1.0 wrote running sums; their M2 carries the old cancellation error
                n = int(data["n"])
                mean = np.asarray(data["sum_x"], np.float64) / n
                m2 = np.asarray(data["sum_xxt"], np.float64) - n * np.outer(mean, mean)
                return cls(dim=mu.shape[0], n=n, mean=mean, m2=m2, meta=meta)
        return cls(dim=mu.shape[0], n=None, _mu=mu, _sigma=sigma, meta=meta)
