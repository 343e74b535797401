"""The registry of analysis steps.

A step is a small class with a ``name``, a typed ``Config`` dataclass, the
names of the steps it ``requires``, a code ``version`` (bump it when the
step's output changes) and ``run(ctx, config) -> Artifact``. ``columns``
turns its artifact into per-sample columns for the sample table.

Steps that do not read the model (``uses_model = False``) are keyed without
the model's fingerprint, so a new checkpoint reuses them.

A step declares its columns (``declares``: :class:`Column` records with a
kind, a unit, plain words, whether it is per head, an uncertainty/OOD score
and its MC-dropout twin); :func:`column_info` finds the declaration of a
column over all registered steps, and the dashboard's tables of kinds, units
and score families are read from these declarations.

A step also says when it runs: ``datasets`` (the analysed one, the extra
out-of-distribution ones, or both), :meth:`Step.planned` (e.g. only with MC
dropout, only for the chosen projections), ``order`` (its place among steps
whose requirements are met), :meth:`Step.background` (started as soon as its
inputs are ready, beside the others, when its work runs in a child process) and
:meth:`Step.plan_options` (the config it takes from the run's flags).
:func:`plan` derives the run's steps from these; nothing else lists them.

Steps are found, not listed: every module of :mod:`analysis.steps` is imported
(:func:`discover_steps`), and so is every module an installed package names
in the ``loupe.steps`` entry-point group. Adding a step is one new module.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from analysis.executor import Executor
    from cache import Artifact
    from core.datasets import ImageDataset
    from models.checkpoint import LoadedModel


log = logging.getLogger(__name__)

COLUMN_KINDS = ("numeric", "class", "bool", "text", "id")
ENTRY_POINT_GROUP = "loupe.steps"
DATASET_ROLES = ("main", "extra")


@dataclass(frozen=True)
class Column:
    """The declaration of one per-sample column a step produces.

    Attributes
    ----------
    name : str
        The column's name in the sample table (snake_case).
    kind : str
        ``"numeric"``, ``"class"`` (a class index), ``"bool"``, ``"text"`` or ``"id"``.
    unit : str
        The unit, in plain words (``"px"``, ``"degrees"``, ``"0-1"``); ``""`` for none.
    description : str
        What the value means, in plain words (one sentence).
    worse : str or None
        ``"higher"`` or ``"lower"`` when one direction is worse (more suspicious,
        more unusual); ``None`` when neither is.
    interpretable : bool
        Whether the column is metadata a person can reason with, usable to
        explain a slice (image measurements, user metadata) rather than a
        model score.
    words : str
        A short label in plain words for axes, hovers and the Sample page
        (``"to the nearest class centroid"``); empty: the name with spaces.
    per_head : bool
        The step writes one such column per head of a multi-head model
        (``name@head`` in :meth:`Step.columns`).
    score : bool
        An uncertainty / out-of-distribution score (higher = less sure, more
        unusual): drawn on the Uncertainty & OOD page and scored by AUROC.
    mc : bool
        Computed with MC dropout (from the mean of T stochastic passes).
    mc_twin : str or None
        The name of the MC-dropout version of this column, if there is one.
    when : str
        When the column exists, if not always, in plain words (``"colour images"``).
    """

    name: str
    kind: str
    unit: str = ""
    description: str = ""
    worse: str | None = None
    interpretable: bool = False
    words: str = ""
    per_head: bool = False
    score: bool = False
    mc: bool = False
    mc_twin: str | None = None
    when: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} is not one of "
                             f"{', '.join(COLUMN_KINDS)}")
        if self.worse not in ("higher", "lower", None):
            raise ValueError(f"column {self.name!r}: worse must be 'higher', 'lower' or None, "
                             f"got {self.worse!r}")
        if self.score and self.worse != "higher":
            raise ValueError(f"column {self.name!r}: a score is worse when higher")

    @property
    def label(self) -> str:
        """Plain words for the column: :attr:`words`, else its name with spaces."""
        return self.words or self.name.replace("_", " ")


@dataclass(frozen=True)
class Plan:
    """What a run asks for, from which :func:`plan` derives its steps.

    Attributes
    ----------
    mc_samples : int
        MC-dropout passes T; 0: none.
    projections : tuple of str
        The 2-D maps asked for (``umap``, ``tsne``).
    extra : bool
        Planning an extra (out-of-distribution) dataset rather than the analysed one.
    metadata : str or None
        The ``--metadata`` functions, if any.
    attribution : str or None
        The attribution method whose heatmaps are precomputed, if any.
    k : int
        Neighbours reported per sample.
    gradcam_layer : str or None
        GradCAM's layer, if chosen.
    """

    mc_samples: int = 0
    projections: tuple[str, ...] = ()
    extra: bool = False
    metadata: str | None = None
    attribution: str | None = None
    k: int = 10
    gradcam_layer: str | None = None

    @property
    def role(self) -> str:
        return "extra" if self.extra else "main"


def _in_process() -> Executor:
    from analysis.executor import InProcessExecutor  # imported late: it imports torch

    return InProcessExecutor()


@dataclass
class StepContext:
    """What a step's ``run`` may use.

    Attributes
    ----------
    model : LoadedModel
    dataset : ImageDataset
    device : torch.device
    inputs : dict of str to Artifact
        The artifacts of the steps named in ``requires``.
    reference : dict of str to Artifact
        Artifacts of the in-distribution dataset when this dataset is an
        *extra* (out-of-distribution) one; empty otherwise.
    progress : bool
        Show tqdm bars.
    executor : Executor
        Where batch steps run their batches (see :mod:`analysis.executor`; default
        in this process).
    """

    model: LoadedModel
    dataset: ImageDataset
    device: torch.device
    inputs: dict[str, Artifact] = field(default_factory=dict)
    reference: dict[str, Artifact] = field(default_factory=dict)
    progress: bool = True
    executor: Executor = field(default_factory=_in_process)


class Step:
    """Base class of analysis steps (see the module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    requires: ClassVar[tuple[str, ...]] = ()
    uses_model: ClassVar[bool] = True
    # Whether ``run`` calls the model (then it runs under the model's lock, see
    # analysis.forward.model_lock); a step keyed by the model (``uses_model``)
    # that only reads arrays sets this False, so it runs beside one that does.
    calls_model: ClassVar[bool] = True
    # Steps whose key includes the in-distribution (reference) artifacts.
    uses_reference: ClassVar[tuple[str, ...]] = ()
    # The columns ``columns`` returns, declared (see :class:`Column`); steps
    # whose columns depend on the data (user metadata) also override ``declared``.
    declares: ClassVar[tuple[Column, ...]] = ()
    # Planning (see :func:`plan`): which datasets the step runs on, and its place
    # among the steps whose requirements are met (lower first).
    datasets: ClassVar[tuple[str, ...]] = DATASET_ROLES
    order: ClassVar[int] = 500

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, ctx: StepContext, config: Any) -> Artifact:  # pragma: no cover - abstract
        raise NotImplementedError

    def key_extra(self, model: LoadedModel) -> Any:
        """Anything more about ``model`` that the step's result depends on (``None``:
        nothing; then the key is as it was before this hook existed)."""
        return None

    def background(self, n: int, config: Any) -> bool:
        """Whether, on ``n`` samples, the step's long work runs outside this process's GIL
        (in a child process: UMAP, see :mod:`analysis.apart`): then a session's run
        starts it as soon as its inputs are ready and goes on with the others."""
        return False

    def columns(self, artifact: Artifact, config: Any) -> dict[str, np.ndarray]:
        """Per-sample columns (each ``(N,)``) for the sample table; none by default."""
        return {}

    @classmethod
    def declared(cls) -> tuple[Column, ...]:
        """The column declarations known now (``declares`` by default)."""
        return cls.declares

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        """Whether a run asking for ``plan`` runs this step (its ``datasets`` aside)."""
        return True

    @classmethod
    def plan_options(cls, plan: Plan) -> dict[str, Any]:
        """The config overrides this step takes from ``plan`` (the run's flags)."""
        return {}


STEPS: dict[str, type[Step]] = {}
_DISCOVERY_LOCK = threading.Lock()
_discovered = False


def register(cls: type[Step]) -> type[Step]:
    """Class decorator adding a step to :data:`STEPS`."""
    if cls.name in STEPS:
        raise ValueError(f"step {cls.name!r} registered twice ({STEPS[cls.name].__module__} "
                         f"and {cls.__module__})")
    STEPS[cls.name] = cls
    return cls


def discover_steps(refresh: bool = False) -> list[str]:
    """Import every module of :mod:`analysis.steps` and every ``loupe.steps`` plugin.

    Importing a module registers its steps. Done once per process unless
    ``refresh`` (a module added since is then found too). Returns the names of
    the registered steps.
    """
    global _discovered
    with _DISCOVERY_LOCK:
        if _discovered and not refresh:
            return list(STEPS)
        import analysis.steps as package

        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop Loupe
                log.warning("analysis step plugin %s (%s) failed to load: %s: %s", ep.name,
                            ep.value, type(exc).__name__, exc)
        _discovered = True
        return list(STEPS)


def get_step(name: str) -> Step:
    """An instance of the step called ``name``."""
    discover_steps()
    try:
        return STEPS[name]()
    except KeyError:
        raise ConfigError(f"Unknown analysis step {name!r}. Valid steps: "
                          f"{', '.join(sorted(STEPS))}.") from None


def make_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The step's ``Config`` with ``overrides`` applied; unknown fields are an error."""
    step = get_step(name)
    fields = step.Config.__dataclass_fields__
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"Step {name!r} has no option(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(fields) or 'none'}.")
    return step.Config(**overrides)


def all_steps() -> list[str]:
    """Every registered step's name, in plan order (``order``, then name)."""
    discover_steps()
    return sorted(STEPS, key=lambda n: (STEPS[n].order, n))


def plan(request: Plan) -> list[str]:
    """The steps a run asking for ``request`` computes, in dependency order.

    A step is planned when ``request.role`` is in its ``datasets`` and its
    :meth:`Step.planned` says so; whatever a planned step ``requires`` is
    planned too. Among the steps whose requirements are met, the lowest
    ``order`` comes first.
    """
    import heapq

    discover_steps()
    chosen = {n for n, cls in STEPS.items()
              if request.role in cls.datasets and cls.planned(request)}
    todo = list(chosen)
    while todo:
        for dep in STEPS[todo.pop()].requires:
            if dep not in STEPS:
                raise ConfigError(f"Step requires unknown step {dep!r}.")
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    waiting = {n: {d for d in STEPS[n].requires} for n in chosen}
    ready = [(STEPS[n].order, n) for n, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        out.append(name)
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, (STEPS[other].order, other))
    if len(out) != len(chosen):
        stuck = sorted(chosen - set(out))
        raise ConfigError(f"Steps {', '.join(stuck)} require each other in a cycle.")
    return out


def plan_options(request: Plan, steps: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each planned step's config overrides taken from the run's flags."""
    out = {}
    for name in steps:
        opts = STEPS[name].plan_options(request)
        if opts:
            out[name] = dict(opts)
    return out


def parse_step_option(text: str) -> tuple[str, str, Any]:
    """``"mc_dropout.samples=30"`` -> ``("mc_dropout", "samples", 30)``.

    The value is converted to the type of the config field (int, float, bool,
    str, an optional of these, or a tuple of them written comma-separated).
    """
    what = f"--step-option {text!r}"
    head, eq, value = text.partition("=")
    step_name, dot, field_name = head.strip().partition(".")
    if not eq or not dot or not step_name or not field_name:
        raise ConfigError(f"{what}: write STEP.FIELD=VALUE, e.g. mc_dropout.samples=30.")
    step = get_step(step_name)
    hints = typing.get_type_hints(step.Config)
    if field_name not in hints:
        raise ConfigError(f"{what}: step {step_name!r} has no option {field_name!r}; valid: "
                          f"{', '.join(hints) or 'none'}.")
    try:
        return step_name, field_name, _convert(value.strip(), hints[field_name])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}.") from None


def _convert(text: str, kind: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(text, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{text!r} is not a {kind}")
    if origin is tuple:
        inner = args[0] if args else str
        return tuple(_convert(t.strip(), inner) for t in text.split(",") if t.strip())
    if kind is bool:
        low = text.lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'an' if kind is int else 'a'} "
                             f"{kind.__name__}") from None
    raise TypeError(f"options of type {kind} cannot be set from the command line")


def declared_columns() -> list[Column]:
    """Every registered step's column declarations, in plan order (first one per name)."""
    seen: dict[str, Column] = {}
    for name in all_steps():
        for col in STEPS[name].declared():
            seen.setdefault(col.name, col)
    return list(seen.values())


def column_info(name: str) -> Column | None:
    """The declaration of column ``name`` over all registered steps, or ``None``.

    Head-suffixed names (``"col@head"``) fall back to the declaration of ``col``.
    """
    discover_steps()
    base = name.split("@", 1)[0]
    found = None
    for cls in STEPS.values():
        for col in cls.declared():
            if col.name == name:
                return col
            if col.name == base and found is None:
                found = col
    return found
