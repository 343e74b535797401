"""The registry of analysis steps.

A step is a small class with a ``name``, a typed ``Config`` dataclass, the
names of the steps it ``requires``, a code ``version`` (bump it when the
step's output changes) and ``run(ctx, config) -> Artifact``. ``columns``
turns its artifact into per-sample columns for the sample table.

Steps that do not read the model (``uses_model = False``) are keyed without
the model's fingerprint, so a new checkpoint reuses them.

A step may declare its columns (``declares``: :class:`Column` records with a
kind, a unit and a plain-words description); :func:`column_info` finds the
declaration of a column over all registered steps.
"""

from __future__ import annotations

from collections.abc import Mapping
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


COLUMN_KINDS = ("numeric", "class", "bool", "text", "id")


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
    """

    name: str
    kind: str
    unit: str = ""
    description: str = ""
    worse: str | None = None
    interpretable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} is not one of "
                             f"{', '.join(COLUMN_KINDS)}")
        if self.worse not in ("higher", "lower", None):
            raise ValueError(f"column {self.name!r}: worse must be 'higher', 'lower' or None, "
                             f"got {self.worse!r}")


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
    # Steps whose key includes the in-distribution (reference) artifacts.
    uses_reference: ClassVar[tuple[str, ...]] = ()
    # The columns ``columns`` returns, declared (see :class:`Column`); steps
    # whose columns depend on the data (user metadata) also override ``declared``.
    declares: ClassVar[tuple[Column, ...]] = ()

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, ctx: StepContext, config: Any) -> Artifact:  # pragma: no cover - abstract
        raise NotImplementedError

    def key_extra(self, model: LoadedModel) -> Any:
        """Anything more about ``model`` that the step's result depends on (``None``:
        nothing; then the key is as it was before this hook existed)."""
        return None

    def columns(self, artifact: Artifact, config: Any) -> dict[str, np.ndarray]:
        """Per-sample columns (each ``(N,)``) for the sample table; none by default."""
        return {}

    @classmethod
    def declared(cls) -> tuple[Column, ...]:
        """The column declarations known now (``declares`` by default)."""
        return cls.declares


STEPS: dict[str, type[Step]] = {}


def register(cls: type[Step]) -> type[Step]:
    """Class decorator adding a step to :data:`STEPS`."""
    if cls.name in STEPS:
        raise ValueError(f"step {cls.name!r} registered twice")
    STEPS[cls.name] = cls
    return cls


def get_step(name: str) -> Step:
    """An instance of the step called ``name``."""
    _load_builtin_steps()
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
    _load_builtin_steps()
    return list(STEPS)


def column_info(name: str) -> Column | None:
    """The declaration of column ``name`` over all registered steps, or ``None``.

    Head-suffixed names (``"col@head"``) fall back to the declaration of ``col``.
    """
    _load_builtin_steps()
    base = name.split("@", 1)[0]
    found = None
    for cls in STEPS.values():
        for col in cls.declared():
            if col.name == name:
                return col
            if col.name == base and found is None:
                found = col
    return found


def _load_builtin_steps() -> None:
    # Importing the modules registers their steps; done lazily so importing the
    # registry stays cheap.
    from analysis.steps import (  # noqa: F401
        attribution,
        centroids,
        duplicates,
        image_metadata,
        inference,
        label_issues,
        mc_dropout,
        neighbors,
        ood,
        outliers,
        preprocessing,
        projection,
        slices,
        user_metadata,
    )
