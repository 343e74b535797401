"""One analysed run: the single entry point the CLI and the dashboard use.

>>> s = AnalysisSession.open("runs/mnist_cnn", "mnist", "test")   # doctest: +SKIP
>>> s.run()            # every step, cached     # doctest: +SKIP
>>> s.table()          # one row per sample     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from analysis.attribution import attribute, get_method
from analysis.datasets import ImageDataset, load_dataset
from analysis.device import resolve_device
from analysis.engine import Engine, StepRecord
from analysis.errors import ConfigError
from analysis.steps.mc_dropout import dropout_modules
from analysis.steps.neighbors import knn_search
from analysis.steps.projection import PROJECTIONS
from cache import Artifact, ArtifactStore, stable_hash
from models.checkpoint import LoadedModel, load_model

log = logging.getLogger(__name__)
ATTRIBUTION_VERSION = 1


def plan_steps(mc_samples: int, projections: Sequence[str]) -> list[str]:
    """The steps of a full run, in dependency order."""
    unknown = set(projections) - set(PROJECTIONS)
    if unknown:
        raise ConfigError(f"Unknown projection(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(PROJECTIONS)}.")
    steps = ["inference"]
    if mc_samples > 0:
        steps.append("mc_dropout")
    steps += ["pixel_centroids", "centroids", "neighbors", *projections]
    return steps


class AnalysisSession:
    """A model, a dataset, the cache, and the steps run on them.

    Parameters
    ----------
    model : LoadedModel
    dataset : ImageDataset
    store : ArtifactStore
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    mc_samples : int or None
        MC-dropout passes; ``None`` means 20 when the model has dropout, else 0.
    k : int
        Neighbours reported per sample (the shared graph holds more).
    projections : sequence of str
        Maps to compute: ``umap``, ``tsne``.
    """

    def __init__(self, model: LoadedModel, dataset: ImageDataset, store: ArtifactStore,
                 device: str = "auto", *, mc_samples: int | None = None, k: int = 10,
                 projections: Sequence[str] = PROJECTIONS, progress: bool = True) -> None:
        if mc_samples is None:
            mc_samples = 20 if dropout_modules(model.module) else 0
        self.model = model
        self.dataset = dataset
        self.store = store
        self.device = resolve_device(device)
        self.mc_samples = mc_samples
        self.k = k
        self.projections = tuple(projections)
        self.steps = plan_steps(mc_samples, self.projections)
        os.environ.setdefault("NUMBA_CACHE_DIR", str(store.directory / "numba"))
        options = {"mc_dropout": {"samples": mc_samples}, "neighbors": {"k": k}}
        self.engine = Engine(model, dataset, store, self.device, options, progress=progress)

    @classmethod
    def open(cls, checkpoint: str | os.PathLike | None = None, dataset: str = "mnist",
             split: str = "test", *, model_spec: str | None = None,
             weights: str | os.PathLike | None = None, embedding_layer: str | None = None,
             data_root: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, device: str = "auto",
             limit: int | None = None, **kwargs: Any) -> AnalysisSession:
        """Load the model, the dataset and the cache; compute nothing yet."""
        model = load_model(checkpoint, model_spec=model_spec, weights=weights,
                           embedding_layer=embedding_layer)
        ds = load_dataset(dataset, split, data_root=data_root, limit=limit,
                          image_shape=model.input_shape)
        return cls(model, ds, ArtifactStore(cache_dir), device, **kwargs)

    # -- running ---------------------------------------------------------------------------
    def run(self, steps: Sequence[str] | None = None) -> list[StepRecord]:
        """Compute (or read back) every planned step; returns what happened to each."""
        from tqdm.auto import tqdm

        first = len(self.engine.records)
        todo = list(steps or self.steps)
        for name in tqdm(todo, desc="analysis", unit="step", disable=not self.engine.progress):
            self.engine.get(name)
        return self.engine.records[first:]

    def artifact(self, name: str) -> Artifact:
        return self.engine.get(name)

    # -- per-sample table ----------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """One row per sample: ids, label, prediction, loss, MC, centroid and map columns.

        Two-dimensional step outputs (the neighbour lists) are not columns here:
        see :meth:`neighbors` and :func:`analysis.export.export_table`.
        """
        ds = self.dataset
        cols: dict[str, Any] = {
            "sample_id": ds.sample_ids,
            "dataset": ds.name,
            "split": ds.split,
            "index": np.arange(len(ds)),
            "label": ds.labels,
            "label_name": np.asarray(ds.class_names, dtype=object)[ds.labels],
        }
        for name in self.steps:
            for col, values in self.engine.columns(name).items():
                if np.ndim(values) == 1:
                    cols[col] = values
        cols["correct"] = cols["pred"] == ds.labels
        names = self.class_names
        cols["pred_name"] = np.asarray(names, dtype=object)[cols["pred"]]
        if "mc_pred" in cols:
            cols["mc_correct"] = cols["mc_pred"] == ds.labels
        front = ["sample_id", "dataset", "split", "index", "label", "label_name", "pred",
                 "pred_name", "correct", "loss", "confidence", "uncertainty"]
        order = front + [c for c in cols if c not in front]
        return pd.DataFrame({c: cols[c] for c in order})

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names or self.dataset.class_names)

    @cached_property
    def embeddings(self) -> np.ndarray:
        """``(N, D)`` float32 embeddings."""
        return self.artifact("inference")["embedding"]

    @property
    def probabilities(self) -> np.ndarray:
        """``(N, C)`` float32 softmax probabilities."""
        return self.artifact("inference")["probs"]

    def projection(self, method: str) -> np.ndarray:
        """``(N, 2)`` float32 map coordinates for ``umap`` or ``tsne``."""
        if method not in PROJECTIONS:
            raise ConfigError(f"Unknown projection {method!r}; valid: {', '.join(PROJECTIONS)}.")
        return self.artifact(method)["coords"]

    def neighbors(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(N, k)`` neighbour indices and embedding distances from the shared graph."""
        graph = self.artifact("neighbors")
        k = k or self.k
        return graph["indices"][:, :k], graph["distances"][:, :k]

    # -- on-demand queries ---------------------------------------------------------------------
    def similars(self, indices: int | Sequence[int], k: int = 10
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` samples nearest in embedding space to a sample or a selection's mean.

        The queried samples themselves are excluded.

        Returns
        -------
        indices : (k,) int64, nearest first
        distances : (k,) float32, Euclidean in embedding space
        """
        sel = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        n = len(self.dataset)
        if sel.size == 0 or sel.min() < 0 or sel.max() >= n:
            raise ConfigError(f"Sample index out of range 0..{n - 1}: {sel.tolist()[:5]}")
        if sel.size == 1:
            graph = self.artifact("neighbors")
            if k <= graph["indices"].shape[1]:
                return graph["indices"][sel[0], :k], graph["distances"][sel[0], :k]
        emb = self.embeddings
        k_eff = min(k, n - sel.size)
        idx, dist = knn_search(emb, emb[sel].mean(0, keepdims=True), min(n, k_eff + sel.size),
                               self.device)
        keep = ~np.isin(idx[0], sel)
        return idx[0][keep][:k_eff], dist[0][keep][:k_eff]

    def attribute(self, index: int, method: str = "integrated_gradients",
                  target: int | str = "pred", n_steps: int = 50) -> np.ndarray:
        """One sample's ``(H, W)`` float32 heatmap, cached like every other result.

        ``target`` is a class index, ``"pred"`` or ``"label"``.
        """
        get_method(method)
        if not 0 <= int(index) < len(self.dataset):
            raise ConfigError(f"Sample index {index} out of range 0..{len(self.dataset) - 1}.")
        if target == "pred":
            target = int(self.artifact("inference")["pred"][index])
        elif target == "label":
            target = int(self.dataset.labels[index])
        target = int(target)
        if not 0 <= target < self.probabilities.shape[1]:
            raise ConfigError(f"Target class {target} out of range 0..{self.probabilities.shape[1] - 1}.")
        key = stable_hash("loupe-attribution", ATTRIBUTION_VERSION, self.engine.model_id,
                          self.dataset.key, self.dataset.fingerprint, int(index), method, target,
                          n_steps)
        cached = self.store.get(key)
        if cached is not None:
            return cached["heatmap"]
        heat = attribute(self.model, self.dataset.images[[index]], target, method,
                         device=self.device, n_steps=n_steps)[0]
        self.store.put(key, Artifact({"heatmap": heat}))
        return heat

    # -- run metadata --------------------------------------------------------------------------
    @property
    def history(self) -> list[dict]:
        return list(self.model.meta.get("history", []))

    def model_summary(self) -> str:
        """torchinfo's table (layers, output shapes, parameter counts, mult-adds)."""
        from torchinfo import summary

        return str(summary(self.model.module, input_size=(1, *self.model.input_shape),
                           col_names=("input_size", "output_size", "num_params", "mult_adds"),
                           device="cpu", verbose=0))

    @property
    def name(self) -> str:
        return self.model.name
