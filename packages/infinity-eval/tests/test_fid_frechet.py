"""Fréchet distance maths and float64 statistics (pytorch-fid `calculate_frechet_distance`)."""

import numpy as np
import pytest
from infinity_eval.fid import FeatureStatistics, frechet_distance, trace_sqrt_product_eig
from infinity_eval.fid import frechet as frechet_module


def _random_cov(rng: np.random.Generator, d: int, n: int = 200) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return np.cov(x, rowvar=False)


def test_one_dimensional_normals_give_two():
    # N(0, 1) vs N(1, 4): 1 + 1 + 4 - 2*2 = 2
    assert frechet_distance(
        np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])
    ) == pytest.approx(2.0)


def test_diagonal_example_gives_seven():
    fid = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 9.0]))
    assert fid == pytest.approx(7.0)


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 5, size=16), rng.uniform(0.1, 5, size=16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_set_with_itself_is_zero_and_distance_is_symmetric():
    rng = np.random.default_rng(1)
    s1, s2 = _random_cov(rng, 8), _random_cov(rng, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_invariant_under_common_rotation_and_translation():
    rng = np.random.default_rng(2)
    s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    t = rng.normal(size=6)
    base = frechet_distance(mu1, s1, mu2, s2)
    moved = frechet_distance(q @ mu1 + t, q @ s1 @ q.T, q @ mu2 + t, q @ s2 @ q.T)
    assert moved == pytest.approx(base, rel=1e-8)


def test_sqrtm_trace_equals_eigenvalue_trace():
    rng = np.random.default_rng(3)
    s1, s2 = _random_cov(rng, 10), _random_cov(rng, 10)
    import scipy.linalg

    assert np.trace(scipy.linalg.sqrtm(s1 @ s2)).real == pytest.approx(
        trace_sqrt_product_eig(s1, s2), rel=1e-8
    )


def test_near_singular_covariance_gives_finite_nonnegative_distance():
    rng = np.random.default_rng(4)
    # 20 samples in 64 dims: rank-deficient covariances, as FID with N < 2048.
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5
    sx, sy = FeatureStatistics.from_features(x), FeatureStatistics.from_features(y)
    fid = frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma)
    assert np.isfinite(fid) and fid > 0
    # sqrtm of a singular product is accurate to ~1e-8 of the trace (~64 here)
    assert frechet_distance(sx.mu, sx.sigma, sx.mu, sx.sigma) == pytest.approx(0.0, abs=1e-4)


def test_non_finite_root_retries_with_epsilon_on_both_covariances(monkeypatch):
    calls = []
    real = frechet_module._sqrtm

    def fake(m):
        calls.append(m.copy())
        if len(calls) == 1:
            return np.full_like(m, np.inf)
        return real(m)

    monkeypatch.setattr(frechet_module, "_sqrtm", fake)
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 9.0])
    fid = frechet_distance(np.zeros(2), s1, np.array([1.0, 2.0]), s2)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(2)) @ (s2 + 1e-6 * np.eye(2)))
    assert fid == pytest.approx(7.0, abs=1e-5)


def test_imaginary_diagonal_raises_with_its_magnitude():
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_streaming_float64_statistics_equal_batch_statistics(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 12)).astype(np.float32) * 3 + 1
    stream = FeatureStatistics(dim=12)
    for chunk in np.array_split(x, 7):
        stream.update(chunk)
    np.testing.assert_allclose(stream.mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        stream.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12
    )
    # shards merge by summation
    merged = FeatureStatistics.from_features(x[:100]).merge(FeatureStatistics.from_features(x[100:]))
    np.testing.assert_allclose(merged.sigma, stream.sigma, rtol=1e-10)
    # round trip through .npz keeps N and M2; a pytorch-fid style npz (mu, sigma only) loads too
    stream.save(tmp_path / "s.npz")
    back = FeatureStatistics.load(tmp_path / "s.npz")
    assert back.n == 300
    np.testing.assert_array_equal(back.m2, stream.m2)
    np.testing.assert_allclose(back.sigma, stream.sigma)
    np.savez(tmp_path / "plain.npz", mu=stream.mu, sigma=stream.sigma)
    plain = FeatureStatistics.load(tmp_path / "plain.npz")
    assert plain.n is None
    assert frechet_distance(plain.mu, plain.sigma, back.mu, back.sigma) == pytest.approx(0.0, abs=1e-9)


def test_low_rank_sqrtm_stand_in_matches_scipy_trace(fast_sqrtm):
    import scipy.linalg

    rng = np.random.default_rng(6)
    s1 = FeatureStatistics.from_features(rng.normal(size=(3, 64))).sigma
    s2 = FeatureStatistics.from_features(rng.normal(size=(3, 64)) + 1).sigma
    full = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert np.trace(fast_sqrtm(s1 @ s2)).real == pytest.approx(full, rel=1e-6)


def test_streaming_covariance_matches_numpy_cov_when_the_mean_dwarfs_the_spread(tmp_path):
    # Features offset by 1e6 with unit spread: Σxxᵀ − N μμᵀ loses ~12 of float64's 16 digits (relative error
    # 6e-4 here); the pairwise (Chan) merge of mean and M2 keeps numpy.cov's accuracy.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1000, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 1e6
    reference_mu, reference_sigma = x.mean(axis=0), np.cov(x, rowvar=False)
    tolerance = 1e-9 * np.abs(reference_sigma).max()
    stream = FeatureStatistics(dim=16)
    for chunk in np.array_split(x, [1, 2, 50, 333, 334, 900]):  # uneven batches, one of them a single row
        stream.update(chunk)
    np.testing.assert_allclose(stream.mu, reference_mu, rtol=1e-14)
    np.testing.assert_allclose(stream.sigma, reference_sigma, rtol=0, atol=tolerance)
    shards = [FeatureStatistics.from_features(part) for part in np.array_split(x, 3)]
    merged = shards[0].merge(shards[1]).merge(shards[2])
    np.testing.assert_allclose(merged.sigma, reference_sigma, rtol=0, atol=tolerance)
    merged.save(tmp_path / "m.npz")
    np.testing.assert_allclose(
        FeatureStatistics.load(tmp_path / "m.npz").sigma, reference_sigma, atol=tolerance
    )
    # and the distance of the set to itself shifted by a constant is that constant's squared norm
    shifted = FeatureStatistics.from_features(x + 0.25)
    assert frechet_distance(stream.mu, stream.sigma, shifted.mu, shifted.sigma) == pytest.approx(
        16 * 0.0625, rel=1e-6
    )


def test_statistics_files_with_running_sums_from_0_1_0_still_load_and_merge(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 6)) + 3
    n, sum_x, sum_xxt = len(x), x.sum(axis=0), x.T @ x
    mu = sum_x / n
    np.savez(
        tmp_path / "old.npz",
        mu=mu,
        sigma=np.cov(x, rowvar=False),
        n=np.int64(n),
        sum_x=sum_x,
        sum_xxt=sum_xxt,
    )
    old = FeatureStatistics.load(tmp_path / "old.npz")
    assert old.n == 40
    np.testing.assert_allclose(old.sigma, np.cov(x, rowvar=False), rtol=1e-10)
    both = old.merge(FeatureStatistics.from_features(x))
    np.testing.assert_allclose(both.sigma, np.cov(np.concatenate([x, x]), rowvar=False), rtol=1e-10)


def test_fid_of_streamed_statistics_equals_pytorch_fids_batch_recipe():
    # pytorch-fid: mu = np.mean(act, axis=0), sigma = np.cov(act, rowvar=False) over all float32 activations
    rng = np.random.default_rng(9)
    act_a = (rng.normal(size=(300, 32)) * 0.3 + 2.0).astype(np.float32)
    act_b = (rng.normal(size=(250, 32)) * 0.4 + 2.1).astype(np.float32)
    reference = frechet_distance(
        np.mean(act_a, axis=0),
        np.cov(act_a, rowvar=False),
        np.mean(act_b, axis=0),
        np.cov(act_b, rowvar=False),
    )
    streamed = []
    for act in (act_a, act_b):
        stats = FeatureStatistics(dim=32)
        for chunk in np.array_split(act, 6):
            stats.update(chunk)
        streamed.append(stats)
    ours = frechet_distance(streamed[0].mu, streamed[0].sigma, streamed[1].mu, streamed[1].sigma)
    assert ours == pytest.approx(reference, rel=1e-5)  # pytorch-fid averages in float32: ~5e-7 apart here
