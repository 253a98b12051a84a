"""PCA, KMeans, representatives, nearest particles and PC sampling on synthetic latents."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_helpers import balanced_states, blobs
from sklearn.metrics import adjusted_rand_score

from hetsiren.analysis.landscape import (
    cluster_latent,
    fit_pca,
    nearest_particles,
    representatives,
    sample_pc,
)
from hetsiren.errors import UserInputError


@pytest.fixture(scope="module")
def latent():
    states = balanced_states(300)
    return blobs(states), states


def test_pca_explains_all_variance_and_round_trips(latent):
    z, _ = latent
    pca = fit_pca(z)
    assert pca.components.shape == (4, 4)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(4), atol=1e-10)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0)
    assert np.all(np.diff(pca.explained_variance_ratio) <= 1e-12)
    np.testing.assert_allclose(pca.inverse(pca.transform(z)), z, atol=1e-4)
    # sign convention: the largest-magnitude loading of each axis is positive
    idx = np.abs(pca.components).argmax(1)
    assert np.all(pca.components[np.arange(4), idx] > 0)


def test_pca_signs_do_not_depend_on_the_data_sign(latent):
    z, _ = latent
    a, b = fit_pca(z), fit_pca(-z)
    # the axes of -z are the axes of z; the convention fixes the same orientation
    np.testing.assert_allclose(np.abs(a.components), np.abs(b.components), atol=1e-8)
    idx = np.abs(b.components).argmax(1)
    assert np.all(b.components[np.arange(4), idx] > 0)


def test_kmeans_recovers_blobs_and_representatives_are_nearest_real_particles(latent):
    z, states = latent
    c = cluster_latent(z, 3, seed=0)
    assert c.k == 3
    assert adjusted_rand_score(states, c.labels) == pytest.approx(1.0)
    assert c.populations.sum() == len(z)
    np.testing.assert_array_equal(c.populations, np.bincount(c.labels, minlength=3))
    d2 = ((z[:, None, :].astype(np.float64) - c.centres[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(c.representatives, d2.argmin(0))
    # the representative belongs to its own cluster
    np.testing.assert_array_equal(c.labels[c.representatives], np.arange(3))


def test_representatives_pick_the_nearest_row():
    z = np.array([[0, 0], [1, 0], [5, 5], [6, 5]], dtype=np.float32)
    np.testing.assert_array_equal(representatives(z, np.array([[0.9, 0.1], [5.4, 5.0]])),
                                  [1, 2])


def test_nearest_particles_sorted_by_distance():
    z = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    np.testing.assert_array_equal(nearest_particles(z, np.full(3, 6.2), 3), [6, 7, 5])
    assert len(nearest_particles(z, np.zeros(3), 50)) == 10
    with pytest.raises(UserInputError, match="expected 3"):
        nearest_particles(z, np.zeros(2), 3)


def test_sample_pc_spans_the_percentiles(latent):
    z, _ = latent
    pca = fit_pca(z)
    points, t = sample_pc(pca, z, 1, (5, 95), 5)
    coord = pca.transform(z)[:, 0]
    assert points.shape == (5, 4) and points.dtype == np.float32
    np.testing.assert_allclose(t[[0, -1]], np.percentile(coord, [5, 95]))
    assert np.all(np.diff(t) > 0)
    # the points lie on PC1 through the mean
    pc = pca.transform(points)
    np.testing.assert_allclose(pc[:, 0], t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pc[:, 1:], 0, atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"pc": 5}, "PC5 does not exist"),
    ({"pc": 1, "percentiles": (90, 10)}, "percentiles"),
    ({"pc": 1, "n_samples": 1}, "n-samples"),
])
def test_sample_pc_rejects_bad_arguments(latent, kwargs, match):
    z, _ = latent
    with pytest.raises(UserInputError, match=match):
        sample_pc(fit_pca(z), z, **kwargs)


def test_clustering_rejects_bad_input(latent):
    z, _ = latent
    with pytest.raises(UserInputError, match="larger than the number of particles"):
        cluster_latent(z[:2], 3)
    with pytest.raises(UserInputError, match=">= 1"):
        cluster_latent(z, 0)
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        cluster_latent(bad, 3)
    with pytest.raises(UserInputError, match="NaN"):
        fit_pca(bad)


def test_umap_missing_is_a_user_error_or_works(latent):
    from hetsiren.analysis.landscape import embed_umap

    z, _ = latent
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(UserInputError, match="umap-learn"):
            embed_umap(z)
        return
    emb = embed_umap(z[:60], 2)
    assert emb.shape == (60, 2) and np.isfinite(emb).all()
