"""analysis.geometry: metrics against hand-computed values, projections, caching."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import geometry as G
from core.errors import MinbertError


# ------------------------------------------------------------------- metrics
def test_alignment_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])       # normalised: e1, e2
    b = np.array([[0.0, 3.0], [0.0, 1.0]])       # normalised: e2, e2
    # ||e1 - e2||^2 = 2, ||e2 - e2||^2 = 0 -> mean 1
    assert G.alignment(a, b) == pytest.approx(1.0)
    assert G.alignment(a, a) == pytest.approx(0.0)


def test_uniformity_hand_computed():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 5.0]])  # e1, e2, e2
    # pairs: (e1,e2) sq dist 2 twice, (e2,e2) sq dist 0 once
    expected = math.log((2 * math.exp(-2 * 2) + 1.0) / 3)
    assert G.uniformity(x) == pytest.approx(expected)
    # blocked computation gives the same value
    assert G.uniformity(x, block=1) == pytest.approx(expected)


def test_knn_purity_hand_computed():
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    assert G.knn_purity(x, [0, 0, 1, 1], k=1) == pytest.approx(1.0)
    assert G.knn_purity(x, [0, 1, 0, 1], k=1) == pytest.approx(0.0)
    # k=2: each point's neighbours are its twin and one of the other pair -> 1/2
    assert G.knn_purity(x, [0, 0, 1, 1], k=2) == pytest.approx(0.5)


def test_geometry_metrics_contract_and_sts_spearman():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    m = G.geometry_metrics(a, b, labels=[0, 1], k=1)
    assert set(m) == {"alignment", "uniformity", "knn_purity"}
    assert m["alignment"] == pytest.approx(1.0)                 # (0 + 2) / 2
    # all rows e1, e2, e1, e1: pairs with sq dist 2: 3 of 6
    assert m["uniformity"] == pytest.approx(math.log((3 * math.exp(-4) + 3) / 6))
    assert m["knn_purity"] == pytest.approx(0.0)
    assert math.isnan(G.geometry_metrics(a)["alignment"])
    cos_first = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    cos_second = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # cos 1, 0.707, 0
    assert G.sts_spearman(cos_first, cos_second, [5.0, 3.0, 1.0]) == pytest.approx(1.0)
    assert G.sts_spearman(cos_first, cos_second, [1.0, 3.0, 5.0]) == pytest.approx(-1.0)
    with pytest.raises(MinbertError, match="pair up"):
        G.alignment(a, b[:1])
    with pytest.raises(MinbertError, match="2-D"):
        G.geometry_metrics(np.zeros(3))


def test_smooth_knn_dist_hits_log2_k():
    rng = np.random.default_rng(0)
    idx, dist = G.cosine_knn(rng.normal(size=(50, 8)), 10)
    assert (idx[:, 0] == np.arange(50)).all() and (dist[:, 0] == 0).all()
    assert (np.diff(dist, axis=1) >= 0).all()
    sigma, rho = G._smooth_knn_dist(dist.astype(np.float64), 10)
    np.testing.assert_allclose(rho, dist[:, 1])
    psum = np.exp(-np.maximum(dist[:, 1:] - rho[:, None], 0) / sigma[:, None]).sum(1)
    np.testing.assert_allclose(psum, np.log2(10), atol=1e-4)
    graph = G.fuzzy_graph(idx, dist).tocsr()
    assert abs(graph - graph.T).max() < 1e-6  # fuzzy union is symmetric
    assert graph.diagonal().max() == 0.0


# --------------------------------------------------------------- projections
def _clusters(n_per=20, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(3, 16) * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n_per, 16)) for c in centers])
    return x.astype(np.float32), np.repeat([0, 1, 2], n_per)


def test_pca_hand_checked():
    t = np.linspace(-1, 1, 7)
    x = np.stack([3 * t, 0 * t + 1.0, 0.5 * t], axis=1)   # points on a line
    xy = G.project(x, method="pca", n_components=2)
    assert xy.shape == (7, 2)
    np.testing.assert_allclose(np.abs(xy[:, 0]), np.abs(t) * np.sqrt(9.25), atol=1e-5)
    np.testing.assert_allclose(xy[:, 1], 0.0, atol=1e-5)
    assert G.project(x, method="pca", n_components=3).shape == (7, 3)


def test_umap_reproducible_cached_and_separates_clusters(tmp_path, monkeypatch):
    x, labels = _clusters()
    first = G.project(x, "umap", 2, seed=0, cache_dir=tmp_path)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    assert len(list(tmp_path.glob("proj-*.npy"))) == 1
    again = G.project(x, "umap", 2, seed=0)          # no cache: recomputed, same seed
    np.testing.assert_array_equal(first, again)
    other = G.project(x, "umap", 2, seed=1)
    assert not np.array_equal(first, other)
    assert G.knn_purity(first, labels, k=5) > 0.95    # the three clusters stay apart

    def boom(*args, **kwargs):
        raise AssertionError("recomputed instead of reading the cache")
    monkeypatch.setattr(G, "umap_project", boom)
    np.testing.assert_array_equal(G.project(x, "umap", 2, seed=0, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError):               # a different seed is another key
        G.project(x, "umap", 2, seed=3, cache_dir=tmp_path)


def test_project_errors():
    x, _ = _clusters(2)
    with pytest.raises(MinbertError, match="method"):
        G.project(x, method="tsne")
    with pytest.raises(MinbertError, match="2 or 3"):
        G.project(x, n_components=4)
    with pytest.raises(MinbertError, match="at least"):
        G.project(x[:3], "umap")
    with pytest.raises(MinbertError, match="NaN"):
        G.project(np.full((5, 2), np.nan), "pca")


# ------------------------------------------------------ checkpoint samples
def test_embed_sample_cached_per_checkpoint(tiny_model, tmp_path, monkeypatch, repo):
    data_dir = repo / "data"
    s = G.embed_sample(tiny_model, "sts", n=12, seed=1, data_dir=data_dir, cache_dir=tmp_path)
    assert len(s) == 12 and s.emb_a.shape == s.emb_b.shape == (12, tiny_model.embed(["x"]).shape[1])
    np.testing.assert_allclose(s.emb_a, tiny_model.embed(s.texts_a), atol=1e-5)
    assert s.predictions.shape == (12,) and s.errors.shape == (12,)
    m = s.metrics()
    assert {"alignment", "uniformity", "knn_purity", "sts_spearman"} <= set(m)
    assert m["sts_spearman"] == pytest.approx(G.sts_spearman(s.emb_a, s.emb_b, s.labels))
    xy = G.sample_projection(s, "pca", 2, seed=0, cache_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / s.checkpoint_hash[:16]).iterdir())
    assert files == [f"{s.key}-pca-2d-seed0.npy", f"{s.key}.npz"]

    def boom(*args, **kwargs):
        raise AssertionError("embedded again instead of reading the cache")
    monkeypatch.setattr(tiny_model, "embed", boom)
    again = G.embed_sample(tiny_model, "sts", n=12, seed=1, data_dir=data_dir, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.emb_a, s.emb_a)
    np.testing.assert_array_equal(again.predictions, s.predictions)
    np.testing.assert_array_equal(G.sample_projection(again, "pca", 2, seed=0, cache_dir=tmp_path), xy)


def test_sst_sample_errors_and_purity(tiny_model, tmp_path, repo):
    s = G.embed_sample(tiny_model, "sst", n=15, seed=0, data_dir=repo / "data", cache_dir=tmp_path)
    assert s.emb_b is None and s.labels.shape == (15,)
    # the sample's embeddings read each sentence up to max_len, so its predictions do too
    expected = tiny_model.predict_task("sst", s.texts_a, long_text="truncate").argmax(1)
    np.testing.assert_array_equal(s.predictions.astype(int), expected)   # pooled-vector shortcut agrees
    np.testing.assert_array_equal(s.errors, (expected != s.labels).astype(int))
    m = s.metrics(k=3)
    assert 0.0 <= m["knn_purity"] <= 1.0 and math.isnan(m["alignment"])


def test_projection_legend_keeps_class_order_and_distinct_colors():
    """Sentiment classes in label order on a diverging scale (the extremes far apart);
    every class its own color; classes missing from the palette still drawn."""
    from analysis.plots import category_colors, projection_figure
    from core.tasks import TASK_LABELS
    names = TASK_LABELS["sst"]
    palette = category_colors(names, ordinal=True)
    assert list(palette) == list(names) and len(set(palette.values())) == 5
    assert palette[names[0]] != palette[names[-1]]
    rng = np.random.default_rng(0)
    labels = [names[i] for i in rng.integers(0, 5, 60)] + ["other"]
    fig = projection_figure(rng.normal(size=(61, 2)), labels, categorical=True, colors=palette)
    assert [t.name for t in fig.data] == list(names) + ["other"]
    drawn = [t.marker.color for t in fig.data]
    assert drawn[:5] == list(palette.values()) and len(set(drawn)) == 6
    assert sum(len(t.x) for t in fig.data) == 61
    unordered = category_colors(["b", "a", "b", "c"])
    assert list(unordered) == ["b", "a", "c"] and len(set(unordered.values())) == 3


def test_umap_warms_once_per_process():
    """warm_umap imports umap-learn and compiles its kernel once; later calls cost nothing
    and the state reads warm (the Embeddings page says which)."""
    from analysis import geometry as G
    assert G.umap_state() in ("cold", "warm", "warming")
    G.warm_umap()
    assert G.umap_state() == "warm"
    assert G.warm_umap() == 0.0
    assert G.warm_umap_in_background() == "warm"     # nothing started: already warm


def test_nearest_neighbours_by_cosine_hand_checked():
    from analysis.geometry import nearest_neighbours
    emb = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    idx, sims = nearest_neighbours(emb, 0, k=2)
    assert list(idx) == [1, 2]                                 # cos 10/sqrt(101) = 0.995, then 0
    np.testing.assert_allclose(sims, [10 / np.sqrt(101), 0.0])
    assert len(nearest_neighbours(emb, 3, k=10)[0]) == 3       # never itself
