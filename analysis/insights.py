"""Insights: where the model fails and why, as a ranked list.

Each insight is built from cached step artifacts (slices, label issues,
duplicates, outliers, class balance, OOD scores) by :func:`collect_insights`;
the dashboard's Insights page and ``python -m analysis insights`` show the
same list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class Evidence:
    """One piece of metadata that distinguishes an insight's samples.

    Attributes
    ----------
    column : str
        The table column (``stroke_thickness``, ``label``...).
    label : str
        Plain words for it ("stroke thickness").
    unit : str
        Its unit ("px"), empty when it has none.
    inside, outside : float or str
        Typical value inside the group vs outside (the mean for a number, the
        most over-represented value for a class column).
    score : float
        Mutual information (nats) between the binned column and membership;
        the evidence list is sorted by it, highest first.
    lift : float
        Share of the group among samples with the over-represented value (or
        bin) divided by the group's overall share; 1 = no association.
    condition : str
        The over-represented value or bin as a pandas query condition
        (``label == 7``, ``stroke_thickness < 1.9``); empty when unknown.
    """

    column: str
    label: str
    unit: str
    inside: float | str
    outside: float | str
    score: float
    lift: float = 1.0
    condition: str = ""


@dataclass(frozen=True)
class Insight:
    """A group of samples that deserves attention, with the numbers that say why.

    Attributes
    ----------
    kind : str
        ``slice``, ``cluster``, ``label_issues``, ``duplicates``, ``leakage``,
        ``outliers``, ``class_imbalance`` or ``ood``.
    title : str
        Plain words ("Thin 7s are read as 1s").
    severity : str
        One of :data:`SEVERITIES`.
    sample_ids : tuple of str
        The samples of the group, worst first.
    n : int
    share : float
        ``n`` over the dataset's size.
    metrics : dict of str to (float, float)
        Metric name to (inside, outside): ``error_rate``, ``mean_loss``...
    stats : dict of str to float
        ``excess_errors`` (errors beyond the outside rate), ``p_value``,
        ``q_value`` (Benjamini-Hochberg over all groups tried)... as apply.
    explanation : tuple of Evidence
        Distinguishing metadata, most informative first.
    rule : str
        A pandas ``DataFrame.query`` expression over the sample table that
        reproduces the group when it is rule-defined (empty otherwise).
    suggestion : str
        What to do about it, in one sentence.
    """

    kind: str
    title: str
    severity: str
    sample_ids: tuple[str, ...]
    n: int
    share: float
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    explanation: tuple[Evidence, ...] = ()
    rule: str = ""
    suggestion: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        out = asdict(self)
        out["sample_ids"] = list(self.sample_ids)
        out["metrics"] = {k: list(v) for k, v in self.metrics.items()}
        return out
