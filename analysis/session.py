"""One analysed run: the single entry point the CLI and the dashboard use.

>>> s = AnalysisSession.open("runs/mnist_cnn", "mnist", "test")   # doctest: +SKIP
>>> s.run()            # every step, cached     # doctest: +SKIP
>>> s.table()          # one row per sample     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from analysis import apart
from analysis.attribution import attribute, get_method, resolve_gradcam_layer
from analysis.engine import Engine, StepRecord
from analysis.executor import Executor, usable_cores
from analysis.forward import model_lock
from analysis.opening import check_classes, check_forward, load_extra
from analysis.registry import Plan, get_step, make_config, plan, plan_options
from analysis.steps.mc_dropout import has_dropout
from analysis.steps.neighbors import knn_search
from analysis.steps.projection import PROJECTIONS
from analysis.table import build_table
from cache import Artifact, ArtifactStore, stable_hash
from core.datasets import ImageDataset, load_dataset
from core.device import resolve_device
from core.errors import ConfigError
from core.tasks import Task, head_key
from models.checkpoint import LoadedModel, load_model
from models.inputs import InputSpec

log = logging.getLogger(__name__)
ATTRIBUTION_VERSION = 2  # 2: per head


def check_projections(projections: Sequence[str]) -> None:
    """A :class:`ConfigError` naming any projection that is not one of :data:`PROJECTIONS`."""
    unknown = set(projections) - set(PROJECTIONS)
    if unknown:
        raise ConfigError(f"Unknown projection(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(PROJECTIONS)}.")


def plan_steps(mc_samples: int, projections: Sequence[str], extra: bool = False,
               metadata: str | bool | None = None) -> list[str]:
    """The steps of a full run, in dependency order (see :func:`analysis.registry.plan`).

    ``extra=True`` plans an extra (out-of-distribution) dataset: its own
    per-sample steps plus the joint maps with the in-distribution set.
    ``metadata`` (the ``--metadata`` functions) adds their step to the main dataset's.
    """
    check_projections(projections)
    return plan(Plan(mc_samples=mc_samples, projections=tuple(projections), extra=extra,
                     metadata=metadata or None))


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
                 metadata: str | None = None,
                 step_options: Mapping[str, Mapping[str, Any]] | None = None,
                 executor: Executor | None = None) -> None:
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
        if gradcam_layer:
            resolve_gradcam_layer(model, gradcam_layer, dataset.images.shape[1:])
        self.gradcam_layer = gradcam_layer or None
        if attribution:
            get_method(attribution)
        check_projections(self.projections)
        request = Plan(mc_samples=mc_samples, projections=self.projections, k=k,
                       metadata=metadata or None, attribution=attribution or None,
                       gradcam_layer=self.gradcam_layer)
        self.steps = plan(request)
        self.extra_steps = plan(replace(request, extra=True))
        self.options = merge_options(
            plan_options(request, [*self.steps, *self.extra_steps]), step_options)
        self.engine = Engine(model, dataset, store, self.device, self.options,
                             progress=progress, executor=executor)
        self.extras: dict[str, Engine] = {}
        self._insights: dict[tuple, list] = {}
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

    def dataset_of(self, dataset: str | None = None) -> ImageDataset:
        """The analysed dataset (``None`` or its key), else the extra dataset ``dataset``."""
        return self.engine_of(dataset).dataset

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
    def run(self, steps: Sequence[str] | None = None, background: bool = True
            ) -> list[StepRecord]:
        """Compute (or read back) every planned step; returns what happened to each.

        Steps run one after another in plan order, except background ones
        (:meth:`Step.background`: UMAP from ``analysis.apart.APART_MIN`` samples
        up, whose layout, or fit and placing on a sample, then runs in a child
        process, see :mod:`analysis.apart`). Each is started in a second thread as soon as its
        inputs are in memory; the others go on, a step that requires it waits for
        it, and the run ends when it has. While it runs, the other steps' thread
        pools (OpenMP: torch, faiss; OpenBLAS) use one core fewer: a pool spinning
        on a core the child holds runs much slower (the exact 70,000-sample kNN:
        30 s against 20 s on one thread, measured on 2 cores). A background
        step's error is raised at the next step; an error of any step stops the
        child of a background one. ``background=False`` runs every step in turn
        in this thread (the child process is used either way). The records come
        per engine, the analysed dataset's first, each in the order its steps
        finished.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        todo = [(self.engine, name) for name in (steps or self.steps)]
        if steps is None:
            todo += [(eng, name) for eng in self.extras.values() for name in self.extra_steps]
        engines = [self.engine, *self.extras.values()]
        first = [len(e.records) for e in engines]
        started: dict[tuple[int, str], Any] = {}
        stop = threading.Event()

        def beside_get(engine: Engine, name: str) -> Artifact:
            with apart.cancelled_by(stop):
                return engine.get(name)

        with ThreadPoolExecutor(1, thread_name_prefix="loupe-background") as beside:
            try:
                for i, (eng, name) in enumerate(tqdm(todo, desc="analysis", unit="step",
                                                     disable=not self.engine.progress)):
                    for other, step in todo[i:] if background else ():
                        if (id(other), step) not in started and _ready_in_background(other, step):
                            started[id(other), step] = beside.submit(beside_get, other, step)
                    for job in started.values():
                        if job.done():
                            job.result()  # its error, now
                    if (id(eng), name) in started:
                        continue  # it runs beside; whichever step requires it waits for it
                    with _fewer_threads(sum(j.running() for j in started.values())):
                        eng.get(name)
                    if eng is self.engine and name == "preprocessing_check":
                        warning = self.preprocessing()["warning"]
                        if warning:
                            log.warning("%s", warning)
                for job in started.values():
                    job.result()
            except BaseException as exc:
                stop.set()  # the background child stops; its thread ends soon after
                for job in started.values():
                    if not job.cancel() and job.done() and job.exception() not in (None, exc):
                        log.error("a background step failed too: %s", job.exception())
                raise
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
    def table(self, dataset: str | None = None, head: str | None = None,
              columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per sample: ids, label, prediction, loss, MC, centroid and map columns.

        ``dataset`` selects an extra dataset by key (``fashion-mnist:test``);
        the default is the analysed dataset. ``head`` picks the head whose
        label, prediction, loss... fill the unprefixed columns (default: the
        task's first); with several heads every head also has ``<head>_*``
        columns, and ``total_loss`` is the weighted sum. Two-dimensional step
        outputs (the neighbour lists) are not columns here: see :meth:`neighbors`.
        ``columns`` (default all) picks table columns: only the steps they need are read.
        """
        if dataset is None or dataset == self.dataset.key:
            return build_table(self.engine, self.steps, head, columns)
        return build_table(self.extra(dataset), self.extra_steps, head, columns)

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

    def mc_probabilities_of(self, head: str | None = None, dataset: str | None = None
                            ) -> np.ndarray | None:
        """``(N, C_head)`` float32 mean MC-dropout probabilities; ``None`` without MC dropout."""
        engine = self.engine_of(dataset)
        steps = self.steps if engine is self.engine else self.extra_steps
        if "mc_dropout" not in steps:
            return None
        return engine.get("mc_dropout")[head_key("mean_probs", self.task.head(head).name)]

    def accuracy(self, head: str | None = None, mc: bool = False) -> float | None:
        """The analysed dataset's accuracy for one head, with MC dropout when ``mc``
        (``None`` when MC dropout did not run)."""
        name = self.task.head(head).name
        if mc:
            return (self.artifact("mc_dropout").summary[name]["accuracy"]
                    if "mc_dropout" in self.steps else None)
        return self.artifact("inference").summary[name]["accuracy"]

    def reference_neighbors(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """The nearest in-distribution samples of each sample of extra ``dataset``.

        Returns
        -------
        indices : (N_extra, K) int64
            Rows of the analysed dataset, nearest first.
        distances : (N_extra, K) float32
            Their embedding distances.
        """
        dist = self.extra(dataset).get("distances")
        return dist["reference_neighbors"], dist["reference_distances"]

    def joint_maps(self) -> list[tuple[str, str]]:
        """``(step name, title)`` of the joint maps planned for extra datasets, t-SNE
        first, the plain embeddings before the MC-averaged ones."""
        from analysis.registry import STEPS

        maps = [n for n in self.extra_steps if getattr(STEPS[n], "title", None)]
        maps.sort(key=lambda n: (STEPS[n].variant != "plain", STEPS[n].method != "tsne"))
        return [(n, STEPS[n].title) for n in maps]

    def joint_map(self, dataset: str, name: str) -> np.ndarray:
        """``(N_in + N_extra, 2)`` float32 coordinates of joint map ``name`` (see
        :meth:`joint_maps`) of the analysed and the extra ``dataset``, analysed rows first."""
        valid = [n for n, _ in self.joint_maps()]
        if name not in valid:
            raise ConfigError(f"No joint map {name!r}; this run has: {', '.join(valid) or 'none'}.")
        return self.extra(dataset).get(name)["coords"]

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


def merge_options(planned: Mapping[str, Mapping[str, Any]],
                  given: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The steps' options: those the run's flags imply, then ``--step-option`` ones on top.

    Each step's merged options are checked against its ``Config`` (an unknown
    step or field is a :class:`~core.errors.ConfigError` naming the valid ones).
    """
    out = {name: dict(opts) for name, opts in planned.items()}
    for name, opts in (given or {}).items():
        out.setdefault(name, {}).update(opts)
    for name, opts in out.items():
        make_config(name, opts)
    return out


def _ready_in_background(engine: Engine, name: str) -> bool:
    """Whether ``name`` runs in the background here and ``engine`` holds its inputs."""
    step = get_step(name)
    if engine.done(name):
        return False
    reference = step.uses_reference if engine.reference is not None else ()
    if not (all(engine.done(r) for r in step.requires)
            and all(engine.reference.done(r) for r in reference)):
        return False
    n = len(engine.dataset) + (len(engine.reference.dataset) if reference else 0)
    return step.background(n, engine.config(name))


_POOLS = threading.Lock()
_blas_limit: dict[str, Any] = {"holders": 0, "limiter": None}


@contextmanager
def _fewer_threads(busy: int) -> Iterator[None]:
    """Thread pools one core smaller per ``busy`` background child, within the block.

    OpenMP's thread count is per calling thread (set and restored in this one);
    OpenBLAS's is process-wide, so it is held by a count: the first holder sets
    it, the last restores it (two runs in two threads cannot restore each
    other's value).
    """
    if not busy:
        yield
        return
    from threadpoolctl import threadpool_limits

    threads = max(1, usable_cores() - busy)
    with _POOLS:
        _blas_limit["holders"] += 1
        if _blas_limit["holders"] == 1:
            _blas_limit["limiter"] = threadpool_limits(threads, user_api="blas")
    try:
        with threadpool_limits(threads, user_api="openmp"):
            yield
    finally:
        with _POOLS:
            _blas_limit["holders"] -= 1
            if _blas_limit["holders"] == 0:
                _blas_limit["limiter"].restore_original_limits()
                _blas_limit["limiter"] = None
