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

from analysis.attribution import attribute, get_method, resolve_gradcam_layer
from analysis.engine import Engine, StepRecord
from analysis.executor import Executor
from analysis.forward import model_lock
from analysis.steps.mc_dropout import has_dropout
from analysis.steps.neighbors import knn_search
from analysis.steps.projection import PROJECTIONS
from cache import Artifact, ArtifactStore, stable_hash
from core.datasets import ImageDataset, load_dataset
from core.device import resolve_device
from core.errors import ConfigError
from core.tasks import Task, head_key
from models.checkpoint import LoadedModel, load_model
from models.inputs import InputSpec, format_shape

log = logging.getLogger(__name__)
ATTRIBUTION_VERSION = 2  # 2: per head


def plan_steps(mc_samples: int, projections: Sequence[str], extra: bool = False,
               metadata: bool = False) -> list[str]:
    """The steps of a full run, in dependency order.

    ``extra=True`` plans an extra (out-of-distribution) dataset: its own
    per-sample steps plus the joint maps with the in-distribution set.
    ``metadata=True`` adds the ``--metadata`` functions' step to the main dataset's.
    """
    unknown = set(projections) - set(PROJECTIONS)
    if unknown:
        raise ConfigError(f"Unknown projection(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(PROJECTIONS)}.")
    steps = ["inference"] if extra else ["preprocessing_check", "inference"]
    if mc_samples > 0:
        steps.append("mc_dropout")
    steps += ["pixel_centroids", "centroids", "neighbors", "distances"]
    if mc_samples > 0:
        steps.append("mc_distances")
    if not extra:  # image measurements and per-sample insight scores
        steps += ["image_metadata", *(["user_metadata"] if metadata else []), "label_issues",
                  "duplicates", "outliers"]
        # slices before the maps: the maps are last, what a progress line ends on
        return steps + ["slices"] + list(projections)
    from analysis.steps.ood import JOINT_MAPS

    steps.append("joint_neighbors")
    steps += [JOINT_MAPS[(p, "plain")] for p in projections]
    if mc_samples > 0:
        steps.append("mc_joint_neighbors")
        steps += [JOINT_MAPS[(p, "mc")] for p in projections]
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
        MC-dropout passes; ``None`` means 20 when the model has dropout (modules
        or functional calls), else 0. More than 0 without dropout is refused.
    k : int
        Neighbours reported per sample (the shared graph holds more).
    projections : sequence of str
        Maps to compute: ``umap``, ``tsne``.
    extra_datasets : sequence of ImageDataset
        Out-of-distribution datasets analysed with the same model and cache,
        against this (in-distribution) one.
    attribution : str, optional
        Also compute this attribution method's heatmaps for the misclassified
        samples (see :mod:`analysis.steps.attribution`).
    gradcam_layer : str, optional
        GradCAM's layer (a name of :func:`analysis.attribution.conv_layer_choices`);
        default: the output of the last convolutional block.
    metadata : str, optional
        ``package.module:functions``, your own per-sample metadata functions (see
        :mod:`analysis.steps.user_metadata`); imported here.
    executor : Executor, optional
        Where the batch steps run (see :mod:`analysis.executor`); default in-process.
    """

    def __init__(self, model: LoadedModel, dataset: ImageDataset, store: ArtifactStore,
                 device: str = "auto", *, mc_samples: int | None = None, k: int = 10,
                 projections: Sequence[str] = PROJECTIONS, progress: bool = True,
                 extra_datasets: Sequence[ImageDataset] = (),
                 attribution: str | None = None, gradcam_layer: str | None = None,
                 metadata: str | None = None, executor: Executor | None = None) -> None:
        if mc_samples is None:
            mc_samples = 20 if has_dropout(model) else 0
        elif mc_samples > 0 and not has_dropout(model):
            raise ConfigError(f"Model {model.name} ({model.arch}) has no dropout (no nn.Dropout "
                              "modules and no functional dropout calls); MC dropout needs some "
                              f"- use --mc-samples 0 instead of --mc-samples {mc_samples}.")
        if mc_samples < 0:
            raise ConfigError(f"--mc-samples must be 0 (skip) or a positive number of passes, "
                              f"got {mc_samples}.")
        if not 1 <= k < len(dataset):
            raise ConfigError(f"--k must be between 1 and {len(dataset) - 1} (one less than the "
                              f"{len(dataset)} samples of {dataset.key}), got {k}.")
        self.model = model
        self.dataset = dataset
        self.store = store
        self.device = resolve_device(device)
        self.mc_samples = mc_samples
        self.k = k
        self.projections = tuple(projections)
        self.steps = plan_steps(mc_samples, self.projections, metadata=bool(metadata))
        options = {"mc_dropout": {"samples": mc_samples}, "neighbors": {"k": k}}
        if metadata:
            from analysis.steps.user_metadata import metadata_options

            options["user_metadata"] = metadata_options(metadata)
        if gradcam_layer:
            resolve_gradcam_layer(model, gradcam_layer, dataset.images.shape[1:])
        self.gradcam_layer = gradcam_layer or None
        if attribution:
            get_method(attribution)
            self.steps.append("attribution")
            options["attribution"] = {"method": attribution}
            if attribution == "gradcam" and gradcam_layer:
                options["attribution"]["layer"] = gradcam_layer
        self.options = options
        self.engine = Engine(model, dataset, store, self.device, options, progress=progress,
                             executor=executor)
        self.extras: dict[str, Engine] = {}
        self._insights: dict[tuple, list] = {}
        self.extra_steps = plan_steps(mc_samples, self.projections, extra=True)
        for extra in extra_datasets:
            self.add_extra(extra)

    def add_extra(self, dataset: ImageDataset) -> Engine:
        """Analyse ``dataset`` as out-of-distribution data against the main one."""
        if dataset.key == self.dataset.key:
            raise ConfigError(f"--extra-dataset {dataset.key} is the analysed dataset itself.")
        engine = Engine(self.model, dataset, self.store, self.device, self.options,
                        reference=self.engine, progress=self.engine.progress,
                        executor=self.engine.executor)
        self.extras[dataset.key] = engine
        return engine

    def engine_of(self, dataset: str | None) -> Engine:
        """The analysed dataset's engine (``None`` or its key), else the extra one's."""
        return self.engine if dataset in (None, self.dataset.key) else self.extra(dataset)

    def extra(self, key: str) -> Engine:
        """The engine of the extra dataset ``key`` (``name:split``)."""
        try:
            return self.extras[key]
        except KeyError:
            raise ConfigError(f"No extra dataset {key!r}; opened: "
                              f"{', '.join(self.extras) or 'none'}.") from None

    @classmethod
    def open(cls, checkpoint: str | os.PathLike | None = None, dataset: str = "mnist",
             split: str = "test", *, model_spec: str | None = None,
             weights: str | os.PathLike | None = None, embedding_layer: str | None = None,
             data_root: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, device: str = "auto",
             limit: int | None = None, extra_datasets: Sequence[str] = (),
             task: str | None = None, input_spec: InputSpec | None = None,
             trust_code: bool = False, **kwargs: Any) -> AnalysisSession:
        """Load the model, the dataset(s) and the cache; compute nothing yet.

        ``extra_datasets`` are names (``fashion-mnist``, ``notmnist:test``,
        ``folder:PATH``); their split defaults to ``split``, or to the one
        split a dataset has. ``task`` names the model's task (see
        :mod:`core.tasks`) when the run does not. ``input_spec`` declares
        the model's input (``--input-size``, ``--mean``, ``--std``); what it
        leaves open is taken from the run, the model and the data, and said in
        :attr:`input_notes`. The model is tried on one sample before anything
        heavy runs. ``trust_code`` lets a run folder name the code that builds its
        model (see :func:`models.checkpoint.load_model`).
        """
        model = load_model(checkpoint, model_spec=model_spec, weights=weights,
                           embedding_layer=embedding_layer, task=task, input_spec=input_spec,
                           trust_code=trust_code)
        ds = load_dataset(dataset, split, data_root=data_root, limit=limit,
                          image_shape=model.declared.shape)
        model.settle_input(ds.images.shape[1:], ds.key)
        check_classes(model, ds)
        check_forward(model, ds)
        extras = [load_extra(name, split, data_root, limit, model.input_shape, analysed=ds)
                  for name in extra_datasets]
        return cls(model, ds, ArtifactStore(cache_dir), device, extra_datasets=extras, **kwargs)

    # -- running ---------------------------------------------------------------------------
    def run(self, steps: Sequence[str] | None = None) -> list[StepRecord]:
        """Compute (or read back) every planned step; returns what happened to each."""
        from tqdm.auto import tqdm

        todo = [(self.engine, name) for name in (steps or self.steps)]
        if steps is None:
            todo += [(eng, name) for eng in self.extras.values() for name in self.extra_steps]
        engines = [self.engine, *self.extras.values()]
        first = [len(e.records) for e in engines]
        for eng, name in tqdm(todo, desc="analysis", unit="step",
                              disable=not self.engine.progress):
            eng.get(name)
            if eng is self.engine and name == "preprocessing_check":
                warning = self.preprocessing()["warning"]
                if warning:
                    log.warning("%s", warning)
        return [r for e, f in zip(engines, first, strict=True) for r in e.records[f:]]

    def artifact(self, name: str) -> Artifact:
        return self.engine.get(name)

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing check (see :mod:`analysis.steps.preprocessing`): ``n``,
        ``results`` (accuracy and loss per normalisation, the declared one first),
        ``best`` and ``warning`` (empty when the declared one is fine)."""
        return dict(self.artifact("preprocessing_check").summary)

    @property
    def input_notes(self) -> list[str]:
        """What was assumed about the model's input rather than declared, in words."""
        return list(self.model.input_notes)

    # -- per-sample table ----------------------------------------------------------------------
    def table(self, dataset: str | None = None, head: str | None = None) -> pd.DataFrame:
        """One row per sample: ids, label, prediction, loss, MC, centroid and map columns.

        ``dataset`` selects an extra dataset by key (``fashion-mnist:test``);
        the default is the analysed dataset. ``head`` picks the head whose
        label, prediction, loss... fill the unprefixed columns (default: the
        task's first); with several heads every head also has ``<head>_*``
        columns, and ``total_loss`` is the weighted sum. Two-dimensional step
        outputs (the neighbour lists) are not columns here: see :meth:`neighbors`.
        """
        if dataset is None or dataset == self.dataset.key:
            return build_table(self.engine, self.steps, head)
        return build_table(self.extra(dataset), self.extra_steps, head)

    @property
    def task(self) -> Task:
        return self.model.task

    @property
    def heads(self) -> list[str]:
        """The names of the model's heads (``["class"]`` for plain classification)."""
        return self.task.head_names

    def class_names_of(self, head: str | None = None) -> list[str]:
        return list(self.task.head(head).class_names)

    @property
    def class_names(self) -> list[str]:
        """The first head's class names."""
        return self.class_names_of(None)

    @cached_property
    def embeddings(self) -> np.ndarray:
        """``(N, D)`` float32 embeddings."""
        return self.artifact("inference")["embedding"]

    def probabilities_of(self, head: str | None = None, dataset: str | None = None
                         ) -> np.ndarray:
        """``(N, C_head)`` float32 softmax probabilities of one head."""
        engine = self.engine_of(dataset)
        return engine.get("inference")[head_key("probs", self.task.head(head).name)]

    def predictions_of(self, head: str | None = None, dataset: str | None = None
                       ) -> np.ndarray:
        """``(N,)`` int64 predicted class of one head."""
        engine = self.engine_of(dataset)
        return engine.get("inference")[head_key("pred", self.task.head(head).name)]

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

    def gradcam_layers(self) -> list[str]:
        """The modules GradCAM can explain, in forward order; the last is the default
        (see :func:`analysis.attribution.conv_layer_choices`)."""
        from analysis.attribution import conv_layer_choices

        with model_lock(self.model):
            return conv_layer_choices(self.model)

    def attribute(self, index: int, method: str = "integrated_gradients",
                  target: int | str = "pred", n_steps: int = 50,
                  dataset: str | None = None, head: str | None = None,
                  layer: str | None = None, cached_only: bool = False) -> np.ndarray | None:
        """One sample's ``(H, W)`` float32 heatmap, cached like every other result.

        ``target`` is a class index of ``head`` (default: the first head),
        ``"pred"`` or ``"label"``; ``dataset`` an extra dataset's key (default:
        the analysed dataset). The attribution is with respect to the image;
        side inputs (``mnist-sum``'s number) are held at the sample's values.
        ``layer`` is GradCAM's (default: the session's ``gradcam_layer``, else
        the last conv block's output); the other methods ignore it. With
        ``cached_only`` nothing is computed: ``None`` when it is not cached yet.
        """
        get_method(method)
        h = self.task.head(head)
        engine = self.engine_of(dataset)
        ds = engine.dataset
        if not 0 <= int(index) < len(ds):
            raise ConfigError(f"Sample index {index} out of range 0..{len(ds) - 1}.")
        inf = engine.get("inference")
        if target == "pred":
            target = int(inf[head_key("pred", h.name)][index])
        elif target == "label":
            if engine is not self.engine and not self.task.accepts(ds):
                raise ConfigError(f"A {ds.key} sample has no ground-truth class among the "
                                  "model's; explain the predicted class or a class index.")
            target = int(inf[head_key("target", h.name)][index])
        target = int(target)
        if not 0 <= target < h.num_classes:
            raise ConfigError(f"Target class {target} out of range 0..{h.num_classes - 1} "
                              f"(head {h.name!r}).")
        parts = [int(index), method, h.name, target, n_steps]
        if method == "gradcam":  # only GradCAM's key names its layer: the others' stay as they were
            layer = resolve_gradcam_layer(self.model, layer or self.gradcam_layer,
                                          ds.images.shape[1:])
            parts.append(layer)
        key = stable_hash("loupe-attribution", ATTRIBUTION_VERSION, self.engine.model_id,
                          ds.key, ds.fingerprint, *parts)
        cached = self.store.get(key)
        if cached is not None:
            return cached["heatmap"]
        if cached_only:
            return None
        meta = {k: v[[index]] for k, v in self.task.sample_metadata(ds).items()}
        with model_lock(self.model):
            heat = attribute(self.model, ds.images[[index]], target, method,
                             device=self.device, n_steps=n_steps, head=h.name,
                             metadata=meta, layer=layer if method == "gradcam" else None)[0]
        self.store.put(key, Artifact({"heatmap": heat}))
        return heat

    # -- insights ------------------------------------------------------------------------------
    def insights(self) -> list:
        """Every :class:`~analysis.insights.Insight` of this run, most severe first
        (see :func:`analysis.insights.collect_insights`); computed once per set of
        open datasets."""
        from analysis.insights import collect_insights

        key = tuple(self.extras)
        if key not in self._insights:
            self._insights[key] = collect_insights(self)
        return list(self._insights[key])

    def explain(self, indices: Sequence[int] | np.ndarray, dataset: str | None = None,
                head: str | None = None):
        """Why the samples ``indices`` ((M,) row indices) stand out, as an
        :class:`~analysis.insights.Insight` of kind ``selection``: the metadata that
        distinguishes them (:func:`analysis.explain.explain`), error rate and mean loss
        inside vs outside with Fisher's test, the samples worst (highest loss) first."""
        from analysis.insights import explain_selection

        return explain_selection(self.table(dataset, head=head), indices)

    # -- run metadata --------------------------------------------------------------------------
    @property
    def history(self) -> list[dict]:
        return list(self.model.meta.get("history", []))

    def model_summary(self) -> str:
        """torchinfo's table (layers, output shapes, parameter counts, mult-adds)."""
        from analysis.runs import model_summary

        return model_summary(self.model)

    @property
    def name(self) -> str:
        return self.model.name


# Per-head columns repeated as ``<head>_<column>`` when a model has several heads.
HEAD_SUMMARY_COLUMNS = ("label", "pred", "correct", "loss", "confidence", "mc_pred")


def build_table(engine: Engine, steps: Sequence[str], head: str | None = None) -> pd.DataFrame:
    """The per-sample table of one engine's dataset (see :meth:`AnalysisSession.table`)."""
    ds = engine.dataset
    task = engine.model.task
    chosen = task.head(head)
    meta = task.sample_metadata(ds)
    targets = engine.get("inference")
    shared: dict[str, Any] = {}
    per_head: dict[str, dict[str, Any]] = {h: {} for h in task.head_names}
    for name in steps:
        for col, values in engine.columns(name).items():
            if np.ndim(values) != 1:
                continue
            base, _, h = col.partition("@")
            if h:
                per_head[h][base] = values
            else:
                shared[base] = values
    # "Correct" only means something when the dataset is one the task is defined on.
    valid = task.accepts(ds)
    for h in task.heads:
        cols = per_head[h.name]
        target = targets[head_key("target", h.name)]
        cols["label"] = target
        names = np.asarray(list(ds.class_names) if np.array_equal(target, ds.labels)
                           else list(h.class_names), dtype=object)
        cols["label_name"] = np.where((target >= 0) & (target < len(names)),
                                      names[np.clip(target, 0, len(names) - 1)], "")
        cols["pred_name"] = np.asarray(h.class_names, dtype=object)[cols["pred"]]
        cols["correct"] = cols["pred"] == target if valid else np.nan
        if "mc_pred" in cols:
            cols["mc_correct"] = cols["mc_pred"] == target if valid else np.nan
        cols["neg_margin"] = -cols["margin"]
        if "mc_margin" in cols:
            cols["mc_neg_margin"] = -cols["mc_margin"]
    out: dict[str, Any] = {
        "sample_id": ds.sample_ids, "dataset": ds.name, "split": ds.split,
        "index": np.arange(len(ds)),
    }
    out.update(per_head[chosen.name])
    out.update(meta)
    if len(task.heads) > 1:
        for h in task.head_names:
            for col in HEAD_SUMMARY_COLUMNS:
                if col in per_head[h]:
                    out[f"{h}_{col}"] = per_head[h][col]
        out["total_loss"] = shared["total_loss"]
    out.update({k: v for k, v in shared.items() if k != "total_loss"})
    front = ["sample_id", "dataset", "split", "index", "label", "label_name", "pred",
             "pred_name", "correct", "loss", "confidence", "uncertainty"]
    order = front + [c for c in out if c not in front]
    return pd.DataFrame({c: out[c] for c in order})


def check_classes(model: LoadedModel, dataset: ImageDataset) -> None:
    """The analysed dataset must be one the model's task is defined on (its classes)."""
    names = model.class_names
    if names is not None and len(names) != dataset.num_classes and model.task_spec in (
            None, "", "classification"):
        raise ConfigError(f"The model was trained on {len(names)} classes "
                          f"({model.meta.get('dataset', '?')}) but dataset {dataset.key} has "
                          f"{dataset.num_classes}; analyse it with --extra-dataset instead.")
    model.bind_task(dataset.class_names)
    model.task.check_dataset(dataset, what=f"Run {model.name}")


def check_forward(model: LoadedModel, dataset: ImageDataset) -> None:
    """Run the model on one sample, so a model that cannot read this input fails now,
    with the shapes and the flags that fix it, not after minutes of work."""
    import torch

    from analysis.forward import model_batches

    one = dataset.head(1)
    try:
        with model_lock(model), torch.inference_mode():
            _, args = next(model_batches(model, one, torch.device("cpu"), 1))
            model.module(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is reported
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"Model {model.name} fails on one {format_shape(model.input_shape)} image of "
            f"{dataset.key}: {type(exc).__name__}: {first}. Declare the input it expects with "
            "--input-size CxHxW (images are resized and converted to it) and --mean/--std."
        ) from None


def load_extra(name: str, split: str, data_root, limit: int | None,
               image_shape: tuple[int, int, int],
               analysed: ImageDataset | None = None) -> ImageDataset:
    """Load an extra dataset ``name[:split]``; falls back to its only split.

    ``corrupt:NAME`` corrupts ``analysed`` (see :mod:`core.corruptions`).
    """
    from core.datasets import SPLITS_AVAILABLE

    if name.startswith("corrupt:"):
        return load_dataset(name, split, data_root=data_root, limit=limit,
                            image_shape=image_shape, fallback=False, base=analysed)
    if not name.startswith(("folder:", "csv:")) and name.count(":") == 1:
        name, split = name.split(":")
    if split not in SPLITS_AVAILABLE.get(name, (split,)):
        split = SPLITS_AVAILABLE[name][0]
    return load_dataset(name, split, data_root=data_root, limit=limit, image_shape=image_shape,
                        fallback=False)
