"""The map functions behind the ``umap`` and ``tsne`` steps and the joint maps.

- :func:`umap_map`, :func:`tsne_map`: a map of every sample from the shared exact
  kNN graph (umap-learn with PCA initialisation and 200 epochs; openTSNE with FFT
  gradients, 125 early-exaggeration and 150 normal iterations);
- :func:`umap_sampled`, :func:`tsne_sampled`: a map fitted on a class-stratified
  sample (:func:`stratified_sample`) with the others placed by the library's own
  ``transform``, for sets past ``fit_max``;
- :func:`umap_anywhere`, :func:`umap_sampled_anywhere`: the UMAP ones in a child
  interpreter from :data:`analysis.apart.APART_MIN` samples up (see
  :mod:`analysis.apart`).

All are seeded and deterministic. The steps, their options and quality figures
are in :mod:`analysis.steps.projection`.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

import numpy as np
from tqdm.auto import tqdm

from analysis import ann, apart
from analysis.steps.neighbors import knn_graph


def with_self(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prepend each sample itself at distance 0 (umap-learn's kNN convention)."""
    n = len(indices)
    return (np.hstack([np.arange(n)[:, None], indices]).astype(np.int64),
            np.hstack([np.zeros((n, 1), np.float32), distances]).astype(np.float32))


_UMAP_CACHED = threading.Lock()
# umap-learn's kernels of a seeded fit that it compiles without numba's cache.
_UMAP_UNCACHED = (("umap.umap_", "smooth_knn_dist"), ("umap.umap_", "compute_membership_strengths"),
                  ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch"))


def import_umap():
    """``umap``, with every numba function of its fit and layout cached on disk.

    umap-learn compiles ``smooth_knn_dist``, ``compute_membership_strengths`` and
    the layout epoch without ``cache=True``: about 7 s of one core in every
    process that makes its first map (measured here), the child of
    :mod:`analysis.apart` included. ``Dispatcher.enable_caching`` is what
    ``cache=True`` does; numba's folder is the private one of
    :mod:`cache.numba_dir`. Only these three: numba's cache entry does not tell
    ``parallel=True`` from serial builds of one Python function, and umap-learn
    has a parallel twin of the layout epoch (used by unseeded maps), which must
    never be served as the seeded one or the other way round. Imported lazily:
    numba compiles (or loads) on import.
    """
    import umap
    import umap.layouts
    import umap.umap_

    with _UMAP_CACHED:
        if not getattr(umap, "_loupe_cached", False):
            for module, name in _UMAP_UNCACHED:
                func = getattr(sys.modules[module], name, None)
                if func is not None and hasattr(func, "enable_caching") and not func.overloads:
                    func.enable_caching()
            umap._loupe_cached = True
    return umap


def umap_map(features: np.ndarray, knn_idx: np.ndarray, knn_dist: np.ndarray, *,
             n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
             n_epochs: int | None = 200) -> np.ndarray:
    """``(N, 2)`` float32 UMAP coordinates from a precomputed exact kNN graph.

    ``n_epochs=200`` is what umap-learn itself uses above 10,000 samples; at
    exactly 10,000 its default would be 500 epochs for the same trustworthiness.
    ``init="pca"`` replaces the spectral initialisation: on 10k MNIST embeddings
    it is about twice as fast end to end with the same trustworthiness (0.9944).
    """
    umap = import_umap()
    n_neighbors = _umap_neighbors(n_neighbors, knn_idx, len(features))
    idx, dist = with_self(knn_idx[:, :n_neighbors - 1], knn_dist[:, :n_neighbors - 1])
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                        precomputed_knn=(idx, dist), n_jobs=1, n_epochs=n_epochs,
                        init="pca")
    with warnings.catch_warnings():  # no search index: this map needs no transform
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        coords = reducer.fit_transform(np.asarray(features, np.float32))
    return coords.astype(np.float32)


def _umap_neighbors(n_neighbors: int, knn_idx: np.ndarray, n: int) -> int:
    """The neighbours a map of ``n`` samples uses: at most the graph's columns plus
    the sample itself, and fewer than ``n``."""
    return min(n_neighbors, knn_idx.shape[1] + 1, n - 1)


def umap_anywhere(features: np.ndarray, knn_idx: np.ndarray, knn_dist: np.ndarray,
                  **kwargs) -> np.ndarray:
    """:func:`umap_map`, in a child interpreter from ``apart.APART_MIN`` samples up.

    Its layout holds the GIL and one core for tens of seconds; apart, this
    process's other threads go on (see :mod:`analysis.apart`). Same result; the
    child gets only the graph's columns the map reads.
    """
    if len(features) >= apart.APART_MIN:
        cols = _umap_neighbors(kwargs.get("n_neighbors", 15), knn_idx, len(features)) - 1
        return apart.call_apart("umap_map", [features, np.ascontiguousarray(knn_idx[:, :cols]),
                                             np.ascontiguousarray(knn_dist[:, :cols])], **kwargs)
    return umap_map(features, knn_idx, knn_dist, **kwargs)


def umap_sampled_anywhere(features: np.ndarray, fitted: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`umap_sampled`, in a child interpreter from ``apart.APART_MIN`` samples up.

    Above ``fit_max`` the layout of the fit and of ``transform``'s placing are
    umap-learn's seeded, single-threaded numba loops (about 430 s of one core at
    1,000,000 samples); apart, the other steps use the second core meanwhile.
    Same result (``transform_seed`` is fixed).

    Parameters
    ----------
    features : (N, D) float32 array
    fitted : (M,) int array
        The rows the map is fitted on.
    **kwargs
        :func:`umap_sampled`'s keyword arguments.

    Returns
    -------
    (N, 2) float32 array
    """
    if len(features) >= apart.APART_MIN:
        return apart.call_apart("umap_sampled", [features, np.asarray(fitted, np.int64)],
                                **kwargs)
    return umap_sampled(features, fitted, **kwargs)


def tsne_map(features: np.ndarray, knn_idx: np.ndarray, knn_dist: np.ndarray, *,
             perplexity: float = 30.0, seed: int = 0, n_iter: int = 150,
             exaggeration_iter: int = 125, progress: bool = False) -> np.ndarray:
    """``(N, 2)`` float32 openTSNE coordinates from a precomputed exact kNN graph.

    ``exaggeration_iter`` early-exaggeration iterations, then ``n_iter`` normal
    ones, with FFT gradients from 5,000 samples up and Barnes-Hut below (measured
    here: 2.0 s vs 7.9 s at 500 samples, 20 s vs 22 s at 5,000, 12.5 s vs 48 s at
    10,000). On 10k MNIST embeddings 150 normal iterations give the
    trustworthiness of openTSNE's default 500 and of scikit-learn's TSNE (0.9981
    vs 0.9982) and a map that looks the same, in 6 s instead of 12 s (250) or
    33 s (500). openTSNE's learning rate (N / 12) lets the exaggeration phase
    settle early: 125 iterations instead of the classic 250 give the same map on
    70,000 mnist-scale embeddings (trustworthiness 0.9984 both, 10-NN
    preservation 0.3578 both, the same layout), 21.7 s instead of 30.6 s; on
    2,000, 10,000 and 30,000 of them the trustworthiness differs by at most 0.0005.
    """
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    perplexity = min(perplexity, (len(features) - 1) / 3.0)
    k = min(knn_idx.shape[1], max(1, int(3 * perplexity)))
    index = PrecomputedNeighbors(knn_idx[:, :k], knn_dist[:, :k])
    return np.asarray(_tsne_fit(features, index, perplexity, seed, n_iter, progress,
                                exaggeration_iter), dtype=np.float32)


def _tsne_fit(features: np.ndarray, knn_index, perplexity: float, seed: int, n_iter: int,
              progress: bool, exaggeration_iter: int = 125):
    """The fitted openTSNE ``TSNEEmbedding`` of ``features`` from an openTSNE kNN index."""
    from openTSNE import TSNE, affinity, initialization
    from openTSNE.callbacks import Callback

    n = len(features)
    aff = affinity.PerplexityBasedNN(perplexity=perplexity, knn_index=knn_index,
                                     n_jobs=os.cpu_count() or 1, random_state=seed)
    init = initialization.pca(np.asarray(features, np.float32), random_state=seed)
    bar = tqdm(total=exaggeration_iter + n_iter, desc="t-SNE", unit="it", disable=not progress,
               leave=False)

    class Progress(Callback):
        def __call__(self, iteration, error, embedding):
            bar.update(50)
            return False

    tsne = TSNE(n_iter=n_iter, early_exaggeration_iter=exaggeration_iter,
                n_jobs=os.cpu_count() or 1,
                random_state=seed, negative_gradient_method="fft" if n >= 5000 else "bh",
                callbacks=[Progress()],
                callbacks_every_iters=50)
    coords = tsne.fit(affinities=aff, initialization=init)
    bar.update(bar.total - bar.n)  # the callback comes every 50 iterations of each phase
    bar.close()
    return coords


def stratified_sample(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``size`` row numbers with each class in proportion to its count.

    Parameters
    ----------
    labels : (N,) int array
        Any value is a class of its own (e.g. -1 for unlabelled samples).
    size : int
    seed : int

    Returns
    -------
    (min(size, N),) int64, sorted. Each class gets ``floor(size * count / N)``
    rows, the remainder going to the largest fractional parts.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (size / n)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[:size - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), t, replace=False)
              for c, t in zip(classes, take, strict=True) if t]
    return np.sort(np.concatenate(picked)).astype(np.int64)


class SampleSearch:
    """The fitted sample as a kNN index for the libraries' out-of-sample methods.

    umap-learn's ``UMAP.transform`` calls ``query(X, k, epsilon=...)`` and reads
    ``_angular_trees``; openTSNE's affinities call ``query(X, k)``. Exact, or
    IVF-Flat past ``exact_max ** 2`` distances (:func:`analysis.ann.search`).
    """

    _angular_trees = False

    def __init__(self, base: np.ndarray, exact_max: int = 200_000) -> None:
        self.base = np.ascontiguousarray(base, dtype=np.float32)
        self.exact_max = exact_max

    def query(self, queries: np.ndarray, k: int, epsilon: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(M, k)`` int64 indices into the sample and float32 Euclidean distances."""
        return ann.search(self.base, queries, k, exact_max=self.exact_max)


class FoundNeighbours(SampleSearch):
    """Neighbours among the fitted sample found once for all samples to place, handed to
    umap-learn's ``transform`` one block at a time; with no block set it searches, as
    :class:`SampleSearch` does.

    Attributes
    ----------
    block : tuple, optional
        Set before each ``transform`` call: the block's ``(B, D)`` features, ``(B, k)``
        int64 neighbour indices and ``(B, k)`` float32 distances.
    """

    def __init__(self, base: np.ndarray, exact_max: int = 200_000) -> None:
        super().__init__(base, exact_max)
        self.block: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def query(self, queries: np.ndarray, k: int, epsilon: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """The block's ``(B, k)`` neighbours (copies), after checking that ``queries`` are
        the block's features; without a block, :meth:`SampleSearch.query`."""
        if self.block is None:
            return super().query(queries, k, epsilon)
        feats, idx, dist = self.block
        ends = [0, -1] if len(feats) else []
        if (len(queries) != len(feats) or idx.shape[1] < k
                or not np.array_equal(np.asarray(queries)[ends], feats[ends])):
            raise RuntimeError(f"FoundNeighbours: umap-learn asked for {k} neighbours of "
                               f"{len(queries)} samples that are not the block of {len(feats)} "
                               f"x {idx.shape[1]} found; this umap-learn version's transform "
                               "queries differently")
        return np.array(idx[:, :k]), np.array(dist[:, :k])


PLACE_BLOCK = 65_536  # samples per umap-learn transform call: bounds the graph it builds


def umap_sampled(features: np.ndarray, fitted: np.ndarray, *, n_neighbors: int = 15,
                 min_dist: float = 0.1, seed: int = 0, n_epochs: int = 200) -> np.ndarray:
    """``(N, 2)`` float32 UMAP fitted on the rows ``fitted``, the others placed by ``transform``.

    The sample's own exact kNN graph feeds the fit (as :func:`umap_map` does).
    Each other sample's neighbours among the fitted ones are found in one
    search (:class:`SampleSearch`: exact, or IVF-Flat past ``exact_max ** 2``
    distances); ``UMAP.transform`` then starts each at their weighted mean and
    optimises it for ``n_epochs // 3`` epochs against the fixed fitted map, in
    blocks of :data:`PLACE_BLOCK` samples, so the graph it builds stays the
    size of a block (in one call, placing 950,000 samples peaked 950 MiB higher,
    and took 494 s against 343 s). A sample's placing depends on its block only
    through the strongest edge weight of the block, which scales its edges'
    sampling rates and drops edges below ``1 / (n_epochs // 3)`` of it.
    """
    umap = import_umap()
    feats = np.asarray(features, np.float32)
    base = np.ascontiguousarray(feats[fitted])
    n_neighbors = min(n_neighbors, len(base) - 1)
    idx, dist = with_self(*knn_graph(base, n_neighbors - 1))
    search = FoundNeighbours(base)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                        precomputed_knn=(idx, dist, search), n_jobs=1,
                        n_epochs=n_epochs, init="pca", transform_seed=seed)
    with warnings.catch_warnings():  # SampleSearch is not pynndescent's, yet transform works
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        reducer.fit(base)
    coords = np.empty((len(feats), 2), np.float32)
    coords[fitted] = reducer.embedding_
    rest = _held_out(len(feats), fitted)
    found_idx, found_dist = search.query(feats[rest], n_neighbors)
    for start in range(0, len(rest), PLACE_BLOCK):
        rows = rest[start:start + PLACE_BLOCK]
        block = np.asarray(feats[rows])
        search.block = (block, found_idx[start:start + PLACE_BLOCK],
                        found_dist[start:start + PLACE_BLOCK])
        coords[rows] = reducer.transform(block)
    search.block = None
    return coords


def tsne_sampled(features: np.ndarray, fitted: np.ndarray, *, perplexity: float = 30.0,
                 seed: int = 0, n_iter: int = 150, exaggeration_iter: int = 125,
                 progress: bool = False) -> np.ndarray:
    """``(N, 2)`` float32 t-SNE fitted on the rows ``fitted``, the others placed by ``transform``.

    The fit is :func:`tsne_map`'s on the sample's own exact kNN graph; openTSNE's
    ``TSNEEmbedding.transform`` (``prepare_partial``: perplexity-5 affinities to
    the fitted samples, each new point started at the median of its 15 nearest
    fitted ones, then 250 iterations against the fixed map) places the others.
    ``transform`` recentres the fitted map; both parts are returned in that frame.
    """
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    feats = np.asarray(features, np.float32)
    base = np.ascontiguousarray(feats[fitted])
    perplexity = min(perplexity, (len(base) - 1) / 3.0)
    k = min(len(base) - 1, max(1, int(3 * perplexity)))
    idx, dist = knn_graph(base, k)
    search = SampleSearch(base)

    class Queryable(PrecomputedNeighbors):  # the sample's graph, and a search for new points
        def query(self, query, k):
            return search.query(query, k)

    embedding = _tsne_fit(base, Queryable(idx, dist), perplexity, seed, n_iter, progress,
                          exaggeration_iter)
    rest = _held_out(len(feats), fitted)
    placed = embedding.transform(feats[rest])
    coords = np.empty((len(feats), 2), np.float32)
    coords[fitted] = np.asarray(embedding)
    coords[rest] = np.asarray(placed)
    return coords


def _held_out(n: int, fitted: np.ndarray) -> np.ndarray:
    mask = np.ones(n, bool)
    mask[fitted] = False
    return np.flatnonzero(mask)
