"""What the dashboard serves: runs, datasets and where things live (server side only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from cache.store import default_cache_dir

log = logging.getLogger(__name__)


@dataclass
class DashboardConfig:
    """Options of ``python -m dashboard`` (see :mod:`dashboard.cli`).

    Attributes
    ----------
    checkpoints : list of run folders or checkpoint files (``None``: bring-your-own
        ``model_spec`` + ``weights``)
    dataset, split : the dataset every run is analysed on
    extra_datasets : out-of-distribution datasets (e.g. ``fashion-mnist``) analysed against
        ``dataset`` (the Uncertainty & OOD page)
    runs_dir : folder of training runs listed on the Experiments page (every sub-folder
        holding a ``model.pt``; see :func:`analysis.runs.discover_runs`)
    """

    checkpoints: list[str | None] = field(default_factory=lambda: ["runs/mnist_cnn"])
    dataset: str = "mnist"
    split: str = "test"
    extra_datasets: list[str] = field(default_factory=list)
    data_root: str | None = None
    cache_dir: str | None = None
    model_spec: str | None = None
    weights: str | None = None
    embedding_layer: str | None = None
    limit: int | None = None
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8050
    debug: bool = False
    progress: bool = True
    runs_dir: str = "runs"
    mc_samples: int | None = None
    projections: tuple[str, ...] = ("umap", "tsne")
    input_size: str | None = None
    mean: str | None = None
    std: str | None = None
    task: str | None = None
    trust_code: bool = False
    metadata: str | None = None  # --metadata package.module:functions
    step_options: tuple[str, ...] = ()  # --step-option STEP.FIELD=VALUE
    executor: str = "inprocess"  # --executor: where batch steps run (analysis.executor)
    ray_address: str | None = None  # --ray-address

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @property
    def jobs_dir(self) -> Path:
        """Where Dash's background callbacks keep their results (under the cache dir)."""
        return self.cache_path / "dashboard-jobs"


def step_options_of(texts) -> dict[str, dict]:
    """``["mc_dropout.samples=30", ...]`` -> ``{"mc_dropout": {"samples": 30}}``."""
    from analysis.registry import parse_step_option

    out: dict[str, dict] = {}
    for text in texts or ():
        step, field_name, value = parse_step_option(text)
        out.setdefault(step, {})[field_name] = value
    return out


def open_runs(config: DashboardConfig):
    """Open and run an :class:`~analysis.session.AnalysisSession` per (checkpoint, dataset).

    Returns
    -------
    RunRegistry
    """
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    for checkpoint in config.checkpoints:
        session = open_session(config, checkpoint)
        session.run()
        registry.add(session, checkpoint)
    return registry


def open_session(config: DashboardConfig, checkpoint: str | None, progress: bool | None = None):
    """An :class:`~analysis.session.AnalysisSession` of ``checkpoint`` on the dashboard's
    data (nothing computed yet); ``progress`` overrides ``config.progress``."""
    from analysis.executor import make_executor
    from analysis.session import AnalysisSession
    from models.inputs import spec_from_flags

    log.info("opening %s on %s:%s%s", checkpoint or config.model_spec, config.dataset,
             config.split, "".join(f" + {d}" for d in config.extra_datasets))
    # Extra datasets are analysed against the main one (MC dropout, distances to it,
    # joint maps): the Uncertainty & OOD page.
    return AnalysisSession.open(
        checkpoint, config.dataset, config.split, model_spec=config.model_spec,
        weights=config.weights, embedding_layer=config.embedding_layer,
        data_root=config.data_root, cache_dir=config.cache_dir, device=config.device,
        limit=config.limit, extra_datasets=config.extra_datasets,
        progress=config.progress if progress is None else progress,
        mc_samples=config.mc_samples, projections=config.projections, task=config.task,
        trust_code=config.trust_code, metadata=config.metadata,
        step_options=step_options_of(config.step_options),
        input_spec=spec_from_flags(config.input_size, config.mean, config.std),
        executor=make_executor(config.executor, config.ray_address))
