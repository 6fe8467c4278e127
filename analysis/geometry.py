"""Embedding geometry: 2-D / 3-D projections (UMAP, PCA) and the numbers beside them.

    xy = project(embeddings, method="umap", n_components=2, seed=0)      # [n, 2]
    geometry_metrics(emb_a, emb_b, labels)   # {"alignment", "uniformity", "knn_purity"}
    sample = embed_sample(model, "sts", n=500, seed=0)    # dev sample, embedded, cached on disk
    xy = sample_projection(sample, method="umap")         # cached per checkpoint + sample

    python -m analysis.geometry sample CKPT --out CKPT/embeddings.json
        # the Embeddings page's view of a checkpoint as JSON (sample_document): the page
        # shows it for a results-only run, kept without model.safetensors (stored_view)

UMAP (McInnes et al., 2018) here is umap-learn's layout optimisation
(``umap.umap_.simplicial_set_embedding``: spectral init + the same SGD as
``umap.UMAP``) on the fuzzy k-NN graph that ``umap.UMAP`` would build, computed with
exact cosine neighbours in numpy. The graph math (``smooth_knn_dist``,
``compute_membership_strengths``, fuzzy union) is UMAP's, vectorised: umap-learn's own
versions are numba ``parallel=True`` kernels whose first-call compilation alone takes
~20 s on 2 CPU cores, longer than the whole projection. A fixed ``seed`` makes the
result reproducible (umap-learn then runs single-threaded).

Metrics (Wang & Isola, 2020), on L2-normalised embeddings:

    alignment   E ||f(x) - f(y)||^2 over positive pairs (x, y)        lower is better
    uniformity  log E exp(-2 ||f(x) - f(y)||^2) over all pairs        lower is better
    knn_purity  mean share of each point's k cosine nearest neighbours with its label

Bench: ``python -m analysis.geometry --bench`` times a 2,000-sentence UMAP cold and
cached (see :func:`bench`).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.evaluation.cache import read_array, texts_fingerprint, write_array
from core.data.datasets import load_task, texts_for_ids
from core.tasks import canonical_task
from core.evaluation.evaluator import cosine_scores
from core.errors import MinbertError, run_cli

METHODS = ("umap", "pca")
CACHE_VERSION = 1
# Wang & Isola's defaults: alignment exponent alpha = 2, uniformity temperature t = 2.
ALIGN_ALPHA = 2.0
UNIFORM_T = 2.0
# STS pairs scored at least this are "positive pairs" for alignment (Quora: label 1).
STS_POSITIVE = 4.0


# ---------------------------------------------------------------------- basics
def _single_blas(fn):
    """Run ``fn`` with one BLAS thread. These matrices are small, and in a process where
    torch's OpenMP threads are busy (the app, after embedding) extra BLAS threads only
    fight them for the cores: a 2,000 x 384 PCA went from 0.3 s to 10 s that way."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            from threadpoolctl import threadpool_limits
            limits = threadpool_limits(limits=1, user_api="blas")
        except ImportError:  # threadpoolctl comes with scikit-learn; without it, no limit
            limits = contextlib.nullcontext()
        with limits:
            return fn(*args, **kwargs)
    return wrapper


def _as_matrix(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise MinbertError(f"{what} must be a non-empty 2-D array [n, d], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MinbertError(f"{what} contains NaN or infinite values")
    return arr


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def nearest_neighbours(emb, index: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities) of the ``k`` rows of ``emb`` nearest to row
    ``index`` by cosine, most similar first, the row itself left out."""
    x = normalize(_as_matrix(emb, "embeddings"))
    if not 0 <= index < len(x):
        raise MinbertError(f"no point {index} in a sample of {len(x)}")
    sims = x @ x[index]
    sims[index] = -np.inf
    order = np.argsort(-sims, kind="stable")[:max(0, min(k, len(x) - 1))]
    return order, sims[order]


def cosine_knn(x: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine distance ``1 - cos``, the point itself first.

    Returns ``(indices [n, k], distances [n, k])`` sorted by distance; memory is
    ``block x n`` at a time."""
    x = normalize(x).astype(np.float32)
    n = x.shape[0]
    k = min(k, n)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        d = 1.0 - x[rows] @ x.T
        np.clip(d, 0.0, 2.0, out=d)
        d[np.arange(len(rows)), rows] = -1.0  # self first, even among exact duplicates
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(rows), 1))
        pd_ = np.take_along_axis(d, part, 1)
        order = np.argsort(pd_, axis=1, kind="stable")
        idx[rows] = np.take_along_axis(part, order, 1)
        dist[rows] = np.maximum(np.take_along_axis(pd_, order, 1), 0.0)
    return idx, dist


# ------------------------------------------------------------------------ UMAP
def _smooth_knn_dist(dist: np.ndarray, k: int, n_iter: int = 64, local_connectivity: float = 1.0,
                     tol: float = 1e-5, min_scale: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """UMAP's per-point kernel width: binary search for sigma_i such that
    ``sum_j exp(-(d_ij - rho_i) / sigma_i) = log2(k)``; rho_i = distance to the nearest
    non-identical neighbour (``umap.umap_.smooth_knn_dist``, vectorised over points)."""
    n = dist.shape[0]
    target = np.log2(k)
    nonzero = np.where(dist > 0.0, dist, np.inf)
    # local_connectivity = 1: rho is the first non-zero distance (0 if none).
    rho = np.sort(nonzero, axis=1)[:, int(local_connectivity) - 1]
    rho = np.where(np.isfinite(rho), rho, 0.0)
    lo, hi, mid = np.zeros(n), np.full(n, np.inf), np.ones(n)
    done = np.zeros(n, dtype=bool)
    shifted = dist[:, 1:] - rho[:, None]
    for _ in range(n_iter):
        psum = np.where(shifted > 0, np.exp(-np.maximum(shifted, 0) / mid[:, None]), 1.0).sum(1)
        done |= np.abs(psum - target) < tol
        if done.all():
            break
        too_big = (psum > target) & ~done
        too_small = (psum <= target) & ~done
        hi = np.where(too_big, mid, hi)
        lo = np.where(too_small, mid, lo)
        mid = np.where(done, mid, np.where(np.isinf(hi), mid * 2.0, (lo + hi) / 2.0))
    floor = np.where(rho > 0, min_scale * dist.mean(1), min_scale * dist.mean())
    return np.maximum(mid, floor), rho


def fuzzy_graph(knn_idx: np.ndarray, knn_dist: np.ndarray):
    """UMAP's fuzzy simplicial set (``set_op_mix_ratio=1``): directed memberships
    ``exp(-(d - rho) / sigma)``, then the fuzzy union ``A + A^T - A * A^T``."""
    import scipy.sparse as sp
    n, k = knn_idx.shape
    sigma, rho = _smooth_knn_dist(knn_dist.astype(np.float64), k)
    shifted = knn_dist - rho[:, None]
    vals = np.where((shifted <= 0) | (sigma[:, None] == 0), 1.0,
                    np.exp(-np.maximum(shifted, 0) / sigma[:, None]))
    vals[knn_idx == np.arange(n)[:, None]] = 0.0
    rows = np.repeat(np.arange(n), k)
    a = sp.coo_matrix((vals.ravel().astype(np.float32), (rows, knn_idx.ravel())), shape=(n, n)).tocsr()
    a.eliminate_zeros()
    at = a.T.tocsr()
    return (a + at - a.multiply(at)).tocoo()


def _cache_layout_kernel() -> None:
    """Ask numba to keep umap-learn's compiled SGD kernel on disk (umap-learn compiles it
    in every new process, ~2 s on 2 cores; with the on-disk cache only the first process
    ever pays). Harmless if a future umap-learn renames it: then it simply compiles."""
    try:
        from numba.core.caching import NullCache
        from umap import layouts
        kernel = layouts._nb_optimize_layout_euclidean_single_epoch
        if isinstance(getattr(kernel, "_cache", None), NullCache):
            kernel.enable_caching()
    except (ImportError, AttributeError):
        pass


def umap_project(x: np.ndarray, n_components: int = 2, seed: int = 0, n_neighbors: int = 15,
                 min_dist: float = 0.1, n_epochs: int | None = None) -> np.ndarray:
    """UMAP of ``x`` with cosine neighbours (see the module docstring)."""
    from umap.umap_ import find_ab_params, simplicial_set_embedding
    _cache_layout_kernel()
    n = x.shape[0]
    if n < n_components + 3:
        raise MinbertError(f"UMAP needs at least {n_components + 3} points, got {n}; "
                           f"use method='pca' or a larger sample")
    k = max(2, min(n_neighbors, n - 1))
    idx, dist = cosine_knn(x, k)
    graph = fuzzy_graph(idx, dist)
    a, b = find_ab_params(1.0, min_dist)
    rng = np.random.RandomState(seed)
    init = "spectral" if n > 2 * (n_components + 1) else "random"
    emb, _ = simplicial_set_embedding(
        normalize(x).astype(np.float32), graph, n_components, initial_alpha=1.0, a=a, b=b, gamma=1.0,
        negative_sample_rate=5, n_epochs=n_epochs, init=init, random_state=rng, metric="cosine",
        metric_kwds={}, densmap=False, densmap_kwds={}, output_dens=False, parallel=False)
    return np.asarray(emb, dtype=np.float32)


_WARM = {"state": "cold", "seconds": None}
_WARM_LOCK = __import__("threading").Lock()


def umap_state() -> str:
    """``"warm"`` once umap-learn is imported and its layout kernel compiled in this
    process (a UMAP then takes seconds), ``"warming"`` while :func:`warm_umap` runs,
    else ``"cold"`` (the first UMAP also pays the import and the compilation)."""
    if _WARM["state"] == "cold" and "umap.umap_" in sys.modules:
        return "warm"     # imported by an earlier projection: its kernel is compiled (or cached on disk)
    return _WARM["state"]


def warm_umap() -> float:
    """Import umap-learn and run one tiny projection (compiling its layout kernel), once
    per process; returns the seconds it took (0 when already warm)."""
    with _WARM_LOCK:
        if _WARM["seconds"] is not None:
            return 0.0
        _WARM["state"] = "warming"
        start = time.perf_counter()
        try:
            rng = np.random.default_rng(0)
            umap_project(rng.normal(size=(40, 8)).astype(np.float32), 2, seed=0, n_epochs=20)
        except Exception:   # warming is a courtesy: the real call reports any problem
            _WARM["state"] = "cold"
            return 0.0
        _WARM["seconds"] = time.perf_counter() - start
        _WARM["state"] = "warm"
        return _WARM["seconds"]


def warm_umap_in_background() -> str:
    """Start :func:`warm_umap` in a daemon thread unless it is warm or warming; returns
    the state before (the Embeddings page calls this when it opens, so the first UMAP a
    user asks for does not also pay umap-learn's import and compilation)."""
    state = umap_state()
    if state == "cold":
        import threading
        _WARM["state"] = "warming"
        threading.Thread(target=warm_umap, name="warm-umap", daemon=True).start()
    return state


def pca_project(x: np.ndarray, n_components: int = 2) -> np.ndarray:
    """PCA by SVD of the centred data; each axis's sign fixed so the largest loading is positive."""
    x = x - x.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:n_components]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    out = x @ vt.T
    if out.shape[1] < n_components:  # fewer points / dims than components: pad with zeros
        out = np.pad(out, ((0, 0), (0, n_components - out.shape[1])))
    return out.astype(np.float32)


def _projection_key(x: np.ndarray, method: str, n_components: int, seed: int, params: dict) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(json.dumps([CACHE_VERSION, list(x.shape), method, n_components, seed, params],
                        sort_keys=True).encode())
    return h.hexdigest()[:32]


@_single_blas
def project(embeddings, method: str = "umap", n_components: int = 2, seed: int = 0,
            n_neighbors: int = 15, min_dist: float = 0.1,
            cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """2-D or 3-D coordinates ``[n, n_components]`` (float32) for ``embeddings [n, d]``.

    ``method``: ``umap`` (cosine neighbours, reproducible for a ``seed``) or ``pca``
    (fast, deterministic). With ``cache_dir`` the result is stored as
    ``proj-<hash>.npy``, keyed by the embeddings' bytes, the method, its parameters
    and the seed, and read back on the next identical call.
    """
    if method not in METHODS:
        raise MinbertError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    if n_components not in (2, 3):
        raise MinbertError(f"n_components must be 2 or 3, got {n_components!r}")
    x = _as_matrix(embeddings, "embeddings")
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist} if method == "umap" else {}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"proj-{_projection_key(x, method, n_components, seed, params)}.npy"
        cached = read_array(path)   # a corrupt entry is recomputed and overwritten
        if cached is not None and cached.shape == (x.shape[0], n_components):
            return cached
    if method == "pca":
        out = pca_project(x, n_components)
    else:
        out = umap_project(x, n_components, seed, n_neighbors, min_dist)
    if path is not None:
        write_array(path, out)
    return out


# --------------------------------------------------------------------- metrics
def alignment(emb_a, emb_b, alpha: float = ALIGN_ALPHA) -> float:
    """Wang & Isola alignment: mean ``||f(a_i) - f(b_i)||^alpha`` of normalised pairs."""
    a, b = normalize(_as_matrix(emb_a, "emb_a")), normalize(_as_matrix(emb_b, "emb_b"))
    if a.shape != b.shape:
        raise MinbertError(f"emb_a and emb_b must pair up row by row: shapes {a.shape} vs {b.shape}")
    return float((np.linalg.norm(a - b, axis=1) ** alpha).mean())


def uniformity(emb, t: float = UNIFORM_T, block: int = 2048) -> float:
    """Wang & Isola uniformity: ``log mean_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)``."""
    x = normalize(_as_matrix(emb, "embeddings"))
    n = x.shape[0]
    if n < 2:
        return float("nan")
    total = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        sq = np.clip(2.0 - 2.0 * (x[start:stop] @ x.T), 0.0, None)  # unit vectors
        # keep pairs i < j only
        mask = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
        total += float(np.exp(-t * sq)[mask].sum())
    return float(np.log(total / (n * (n - 1) / 2)))


def knn_purity(emb, labels, k: int = 10) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours (cosine, itself excluded)
    that share its label."""
    x = _as_matrix(emb, "embeddings")
    labels = np.asarray(labels)
    if labels.shape[0] != x.shape[0]:
        raise MinbertError(f"labels ({labels.shape[0]}) and embeddings ({x.shape[0]}) differ in length")
    if x.shape[0] < 2:
        return float("nan")
    k = min(k, x.shape[0] - 1)
    idx, _ = cosine_knn(x, k + 1)
    neighbours = idx[:, 1:]
    return float((labels[neighbours] == labels[:, None]).mean())


def sts_spearman(emb_a, emb_b, scores) -> float:
    """Spearman correlation between cos(a_i, b_i) and the gold STS scores (the cosine of
    core/evaluation/evaluator.py's STS evaluator, :func:`core.evaluation.evaluator.cosine_scores`)."""
    from core.evaluation.metrics import spearman
    cos = cosine_scores(_as_matrix(emb_a, "emb_a"), _as_matrix(emb_b, "emb_b"))
    return float(spearman(np.asarray(scores, dtype=np.float64), cos))


@_single_blas
def geometry_metrics(emb_a, emb_b=None, labels=None, k: int = 10) -> dict[str, float]:
    """``alignment`` over the positive pairs ``(emb_a[i], emb_b[i])``, ``uniformity``
    over every row of ``emb_a`` and ``emb_b``, ``knn_purity`` of ``labels`` (one per row
    of ``emb_a``) among ``k`` neighbours. Values that the inputs do not allow are NaN."""
    a = _as_matrix(emb_a, "emb_a")
    both = a if emb_b is None else np.concatenate([a, _as_matrix(emb_b, "emb_b")])
    return {
        "alignment": alignment(a, emb_b) if emb_b is not None else float("nan"),
        "uniformity": uniformity(both),
        "knn_purity": knn_purity(a, labels, k) if labels is not None else float("nan"),
    }


# ------------------------------------------------------ checkpoint dev samples
def prediction_errors(task: str, predictions, labels) -> np.ndarray | None:
    """Per-example errors of a sample's predictions (sst: class id, qqp: probability,
    sts: score): sst / qqp 1 where wrong, else 0; sts |prediction - label|."""
    if predictions is None or labels is None:
        return None
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task == "sts":
        return np.abs(predictions - labels)
    pred = predictions if task == "sst" else (predictions >= 0.5).astype(int)
    return (pred != labels).astype(int)


@dataclass
class EmbeddingSample:
    """A seeded sample of a task's examples, embedded by one checkpoint."""
    task: str
    split: str
    ids: list[str]
    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray | None
    emb_a: np.ndarray                 # [n, d] embeddings of the first (or only) sentences
    emb_b: np.ndarray | None          # [n, d] of the second sentences (pair tasks)
    predictions: np.ndarray | None    # sst: class, qqp: probability, sts: score
    checkpoint_hash: str
    key: str                          # the sample part of the cache key

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def errors(self) -> np.ndarray | None:
        """sst / qqp: 1 where the prediction is wrong; sts: |prediction - label|."""
        return prediction_errors(self.task, self.predictions, self.labels)

    def positive_pairs(self) -> np.ndarray:
        """Row mask of the positive pairs: Quora duplicates, STS pairs scored >= 4."""
        if self.emb_b is None or self.labels is None:
            return np.zeros(len(self), dtype=bool)
        return self.labels >= (STS_POSITIVE if self.task == "sts" else 1)

    @_single_blas
    def metrics(self, k: int = 10) -> dict[str, float]:
        """Alignment (positive pairs), uniformity (every embedded sentence), kNN label
        purity (SST classes / Quora labels), STS Spearman of cosine (STS)."""
        pos = self.positive_pairs()
        out = geometry_metrics(self.emb_a, None, None)
        if pos.any():
            out["alignment"] = alignment(self.emb_a[pos], self.emb_b[pos])
        if self.emb_b is not None:
            out["uniformity"] = uniformity(np.concatenate([self.emb_a, self.emb_b]))
        if self.labels is not None and self.task == "sst":
            out["knn_purity"] = knn_purity(self.emb_a, self.labels, k)
        out["sts_spearman"] = (sts_spearman(self.emb_a, self.emb_b, self.labels)
                               if self.task == "sts" and self.labels is not None else float("nan"))
        out["n"] = len(self)
        out["n_positive_pairs"] = int(pos.sum())
        return out


def default_cache_dir() -> Path:
    from analysis.checkpoints import checkpoints_root
    return checkpoints_root() / ".cache" / "geometry"


def _sample_indices(total: int, n: int, seed: int) -> np.ndarray:
    if n <= 0:
        raise MinbertError(f"sample size must be >= 1, got {n}")
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def _predict_from_embeddings(model, task: str, emb_a, emb_b, texts_a, texts_b):
    """Task predictions (sst: class id, qqp: probability, sts: score); where the model
    says they are a function of the pooled vectors (``model.sentence_level``) its heads
    run on the embeddings instead of encoding again."""
    if task not in model.served_tasks():
        return None
    if model.sentence_level(task):
        out = model.predict_from_embeddings(task, emb_a, emb_b)
    else:   # as the embeddings: each input read up to the model's max_len (no windows)
        out = model.predict_task(task, texts_a, texts_b, long_text="truncate")
    return out.argmax(1).astype(np.float32) if task == "sst" else out


def embed_sample(model, task: str, n: int = 500, seed: int = 0, split: str = "dev", data_dir="data",
                 cache_dir: str | os.PathLike | None = None, checkpoint: str | None = None,
                 batch_size: int = 64) -> EmbeddingSample:
    """Embed a seeded sample of ``n`` examples of ``task``/``split`` with ``model``.

    Cached on disk at ``cache_dir/<checkpoint hash>/<task>-<split>-n<n>-s<seed>-<texts
    digest>.npz`` (``cache_dir`` defaults to ``checkpoints/.cache/geometry``); pass
    ``cache_dir=False`` to skip the cache. ``checkpoint`` names the model's
    checkpoint for hashing when it was not loaded from a directory.
    """
    from analysis.checkpoints import checkpoint_hash
    task = canonical_task(task)
    data = load_task(task, split, data_dir)
    idx = _sample_indices(len(data), n, seed)
    examples = [data.examples[i] for i in idx]
    texts_a = [ex.text_a for ex in examples]
    texts_b = [ex.text_b or "" for ex in examples] if data.is_pair else None
    labels = data.labels[idx] if data.labels is not None else None
    ids = [ex.id for ex in examples]
    ckpt = checkpoint_hash(checkpoint if checkpoint is not None else model)
    key = f"{task}-{split}-n{len(idx)}-s{seed}-{texts_fingerprint(texts_a, texts_b)[:12]}"
    path = None
    if cache_dir is not False:
        path = Path(cache_dir or default_cache_dir()) / ckpt[:16] / f"{key}.npz"
        z = read_array(path)   # None when absent or corrupt: recompute
        if isinstance(z, dict) and "emb_a" in z:
            return EmbeddingSample(task, split, ids, texts_a, texts_b, labels, z["emb_a"], z.get("emb_b"),
                                   z.get("pred"), ckpt, key)
    emb_a = model.embed(texts_a, batch_size=batch_size)
    emb_b = model.embed(texts_b, batch_size=batch_size) if texts_b is not None else None
    pred = _predict_from_embeddings(model, task, emb_a, emb_b, texts_a, texts_b)
    if path is not None:
        arrays = {"emb_a": emb_a}
        if emb_b is not None:
            arrays["emb_b"] = emb_b
        if pred is not None:
            arrays["pred"] = pred
        write_array(path, arrays)
    return EmbeddingSample(task, split, ids, texts_a, texts_b, labels, emb_a, emb_b, pred, ckpt, key)


def sample_projection(sample: EmbeddingSample, method: str = "umap", n_components: int = 2, seed: int = 0,
                      cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The projection of a sample's first sentences, cached next to the sample under
    ``<checkpoint hash>/<sample key>-<method>-<k>d-seed<seed>.npy``."""
    if method not in METHODS:
        raise MinbertError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    path = None
    if cache_dir is not False:
        path = (Path(cache_dir or default_cache_dir()) / sample.checkpoint_hash[:16]
                / f"{sample.key}-{method}-{n_components}d-seed{seed}.npy")
        xy = read_array(path)
        if xy is not None and xy.shape == (len(sample), n_components):
            return xy
    xy = project(sample.emb_a, method=method, n_components=n_components, seed=seed)
    if path is not None:
        write_array(path, xy)
    return xy


def geometry_report(model, n: int = 500, seed: int = 0, data_dir="data",
                    cache_dir: str | os.PathLike | None = None, checkpoint: str | None = None) -> dict[str, float]:
    """The four numbers shown beside the pictures, each on a seeded dev sample of ``n``:
    alignment (STS pairs scored >= 4), uniformity (every STS sentence), STS Spearman of
    cosine similarity, and kNN purity of the SST sentiment labels."""
    sts = embed_sample(model, "sts", n=n, seed=seed, data_dir=data_dir, cache_dir=cache_dir, checkpoint=checkpoint)
    sst = embed_sample(model, "sst", n=n, seed=seed, data_dir=data_dir, cache_dir=cache_dir, checkpoint=checkpoint)
    m = sts.metrics()
    return {"alignment": m["alignment"], "uniformity": m["uniformity"], "sts_spearman": m["sts_spearman"],
            "knn_purity": sst.metrics()["knn_purity"], "n_sts_pairs": len(sts),
            "n_positive_pairs": m["n_positive_pairs"], "n_sst": len(sst)}


# ------------------------------------------------- the sample file of a checkpoint
SAMPLE_FORMAT = "minbert-embedding-sample"


def _plain(value):
    """JSON-safe numbers: NaN / inf -> None, numpy scalars -> Python ones."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def sample_document(model, tasks=("sst", "qqp", "sts"), n: int = 500, seed: int = 0,
                    methods=("umap", "pca"), dims=(2,), data_dir="data",
                    cache_dir: str | os.PathLike | None = None) -> dict:
    """What the Embeddings page shows for a checkpoint, as plain JSON, so that it can show
    it without the weights: for each task the seeded dev sample (ids, labels, predictions;
    the sentences stay in data/ and are looked up by id), its projections
    (``"<method>-<k>d"``, projection seed ``seed``) and its metrics, and the page's four
    numbers (:func:`geometry_report`)."""
    from analysis.checkpoints import checkpoint_hash
    doc = {"format": SAMPLE_FORMAT, "version": 1, "checkpoint_hash": checkpoint_hash(model), "split": "dev",
           "n": n, "seed": seed,
           "report": geometry_report(model, n=n, seed=seed, data_dir=data_dir, cache_dir=cache_dir),
           "samples": {}}
    for task in tasks:
        sample = embed_sample(model, canonical_task(task), n=n, seed=seed, data_dir=data_dir, cache_dir=cache_dir)
        doc["samples"][sample.task] = {
            "ids": sample.ids,   # the sentences are found again by id (core.data.datasets.texts_for_ids)
            "labels": None if sample.labels is None else sample.labels.tolist(),
            # rounded as float64 (a float32's repr carries ~16 digits): a scatter plot needs 3
            # decimals and a prediction 4, and the file stays small enough to keep per run
            "predictions": None if sample.predictions is None else
            np.round(np.asarray(sample.predictions, dtype=np.float64), 4).tolist(),
            "projections": {f"{m}-{k}d": np.round(np.asarray(sample_projection(sample, m, k, seed, cache_dir=cache_dir),
                                                             dtype=np.float64), 3).tolist()
                            for m in methods for k in dims},
            "metrics": sample.metrics()}
    return _plain(doc)


@dataclass
class StoredSample:
    """The sample part of an embedding file: what the page labels, colors and hovers."""
    task: str
    ids: list[str]
    texts_a: list[str]
    labels: np.ndarray | None
    predictions: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def errors(self) -> np.ndarray | None:
        return prediction_errors(self.task, self.predictions, self.labels)


def read_sample_document(path: str | os.PathLike) -> dict:
    """An embedding file written by :func:`sample_document` (``python -m analysis.geometry
    sample``), checked; MinbertError naming the file otherwise."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise MinbertError(f"{path} is missing: write it with `python -m analysis.geometry sample "
                           f"{path.parent} --out {path}` where the weights are") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MinbertError(f"{path} is not a readable embedding file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SAMPLE_FORMAT or not isinstance(doc.get("samples"), dict):
        raise MinbertError(f"{path} is not an embedding file (format != {SAMPLE_FORMAT!r})")
    return doc


def stored_view(path: str | os.PathLike, task: str, method: str, dims: int) -> tuple[StoredSample, np.ndarray, dict]:
    """(sample, projection [n, dims], the page's four numbers) of ``task`` from an
    embedding file, for a checkpoint whose weights are not here."""
    doc = read_sample_document(path)
    task = canonical_task(task)
    part = doc["samples"].get(task)
    if part is None:
        raise MinbertError(f"{path} has no {task} sample (it has: {', '.join(doc['samples']) or 'none'})")
    key = f"{method}-{dims}d"
    if key not in part.get("projections", {}):
        raise MinbertError(f"{path} has no {method.upper()} {dims}-D projection of {task} "
                           f"(it has: {', '.join(part.get('projections', {})) or 'none'})")
    as_array = lambda v: None if v is None else np.asarray(v)
    ids = [str(i) for i in part["ids"]]
    if "texts_a" in part:          # files written before samples were stored by id
        texts_a = list(part["texts_a"])
    else:
        texts_a = [a for a, _ in texts_for_ids(task, ids, doc.get("split", "dev"), str(path))]
    sample = StoredSample(task, ids, texts_a, as_array(part.get("labels")), as_array(part.get("predictions")))
    report = {k: (float("nan") if v is None else v) for k, v in doc.get("report", {}).items()}
    return sample, np.asarray(part["projections"][key], dtype=np.float32), report


# ----------------------------------------------------------------------- bench
def bench(checkpoint: str = "pretrained", task: str = "qqp", n: int = 2000, seed: int = 0,
          data_dir: str = "data") -> dict:
    """Time a ``n``-sentence UMAP for ``checkpoint``: embedding, the cold projection (empty
    projection cache, umap-learn imported and its layout kernel compiled inside the
    timing) and the cached path (checkpoint hash + sample + projection read from disk)."""
    import tempfile

    import torch
    from analysis.checkpoints import load_model
    result: dict = {"checkpoint": checkpoint, "task": task, "n": n, "torch_threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    t0 = time.perf_counter()
    model = load_model(checkpoint)
    result["load_model_s"] = round(time.perf_counter() - t0, 3)
    with tempfile.TemporaryDirectory() as tmp:  # a fresh, empty cache
        cache = Path(tmp)
        t0 = time.perf_counter()
        sample = embed_sample(model, task, n=n, seed=seed, data_dir=data_dir, cache_dir=cache)
        result["embed_s"] = round(time.perf_counter() - t0, 3)
        result["n_sentences"] = len(sample)
        result["umap_import_in_cold_timing"] = "umap" not in sys.modules
        t0 = time.perf_counter()
        xy = sample_projection(sample, "umap", 2, seed, cache_dir=cache)
        result["umap_cold_s"] = round(time.perf_counter() - t0, 3)
        # the cached path, as the app takes it: hash the checkpoint, reload the sample and
        # its projection from disk
        from core.evaluation.cache import forget_fingerprints
        forget_fingerprints()
        t0 = time.perf_counter()
        again = embed_sample(model, task, n=n, seed=seed, data_dir=data_dir, cache_dir=cache)
        xy2 = sample_projection(again, "umap", 2, seed, cache_dir=cache)
        result["umap_cached_s"] = round(time.perf_counter() - t0, 3)
        result["cached_identical"] = bool(np.array_equal(xy, xy2))
        t0 = time.perf_counter()
        project(sample.emb_a, "pca", 2)
        result["pca_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        xy3 = project(sample.emb_a, "umap", 2, seed)
        result["umap_warm_recompute_s"] = round(time.perf_counter() - t0, 3)
        result["reproducible_for_seed"] = bool(np.array_equal(xy, xy3))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.geometry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", action="store_true", help="time a UMAP of --n sentences, cold and cached")
    parser.add_argument("--checkpoint", default="pretrained")
    parser.add_argument("--task", default="qqp", help="dev set to sample sentences from (qqp has 2,000)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for embedding")
    commands = parser.add_subparsers(dest="command")
    sample = commands.add_parser(
        "sample", help="write a checkpoint's embedding sample (what the Embeddings page shows) as JSON",
        description="Write the Embeddings page's view of a checkpoint - a seeded dev sample per task, its "
                    "projections and the geometry numbers - to a JSON file, e.g. CKPT/embeddings.json, so the "
                    "page can show it for a run kept without its weights.")
    sample.add_argument("checkpoint_dir", help="checkpoint directory (or 'pretrained')")
    sample.add_argument("--out", required=True, help="where to write, e.g. CKPT/embeddings.json")
    sample.add_argument("--tasks", nargs="+", default=["sst", "qqp", "sts"])
    sample.add_argument("--n", dest="sample_n", type=int, default=500, help="sentences per task (the page's default)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    sample.add_argument("--dims", nargs="+", type=int, choices=(2, 3), default=[2])
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.command == "sample":
        from analysis.checkpoints import load_model
        from core.atomic import atomic_write_json

        def write() -> dict:
            doc = sample_document(load_model(args.checkpoint_dir), args.tasks, args.sample_n, args.seed,
                                  args.methods, args.dims, data_dir=args.data_dir)
            atomic_write_json(args.out, doc, indent=None, separators=(",", ":"))
            return {"out": str(args.out), "tasks": list(doc["samples"]), "n": doc["n"],
                    "projections": list(next(iter(doc["samples"].values()))["projections"])}
        return run_cli(write)
    if not args.bench:
        parser.print_help()
        return 0
    return run_cli(lambda: bench(args.checkpoint, args.task, args.n, data_dir=args.data_dir))


if __name__ == "__main__":
    sys.exit(main())
