"""``label_issues``: likely wrong labels found by confident learning.

Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 70, 2021), on out-of-sample predicted
probabilities ``P`` (``(n, m)``) and the given labels ``y``:

1. per-class thresholds ``t_j`` = the mean of ``P[i, j]`` over the samples
   labelled ``j`` (the class's average self-confidence);
2. the confident joint ``C[i, j]`` = the number of samples labelled ``i`` whose
   ``P[x, j] >= t_j`` and ``j`` is the most probable class among those above
   their thresholds (samples with no class above its threshold are not counted);
3. calibrated: each row of ``C`` rescaled to the number of samples labelled
   ``i`` (``C~``, which sums to ``n``; the paper's joint ``Q = C~ / n``);
4. issues, "prune by noise rate" (the default): for every ``i != j``, the
   ``round(C~[i, j])`` samples labelled ``i`` with the largest margin
   ``P[x, j] - P[x, i]``; "prune by class": for each class ``i``, the
   ``round(sum_{j != i} C~[i, j])`` samples labelled ``i`` with the lowest
   self-confidence ``P[x, i]``; "both": samples that both rules select.
   As cleanlab does, a sample whose most probable class is its label is never
   an issue.

Out-of-sample probabilities: on a split the model was not trained on, the
model's own probabilities (the ``inference`` step). On the split it was
trained on (run.json's ``dataset`` with split ``train``; any ``train`` split
when the run does not say; the embedded ``mnist-5k`` for a run trained on
``mnist``, whose training images they are), K-fold cross-validated probabilities of a
multinomial logistic regression on the embeddings, so no sample is scored by
a classifier that saw its label. (The embedding itself was learnt with the
labels; a network that memorised a wrong label can hide it there.)

Columns: ``label_issue_score`` = 1 - the out-of-sample probability of the given
label (higher = more likely wrong); ``is_label_issue``; ``suggested_label``,
the class the sample was flagged for (else the most probable class).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.registry import Column, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError
from core.tasks import head_key

log = logging.getLogger(__name__)
METHODS = ("prune_by_noise_rate", "prune_by_class", "both")


def per_class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(m,)`` mean self-confidence ``t_j`` of each class (``inf`` for an absent class: no
    sample is ever confidently counted in it)."""
    m = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=m)
    counts = np.bincount(labels, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.inf)


def confident_joint(probs: np.ndarray, labels: np.ndarray,
                    thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The confident joint ``C`` (``(m, m)``, rows = given label, columns = confident class)
    and each sample's confident class (``-1`` when no class reaches its threshold)."""
    m = probs.shape[1]
    t = per_class_thresholds(probs, labels) if thresholds is None else thresholds
    above = probs >= t[None]
    masked = np.where(above, probs, -np.inf)
    confident = np.where(above.any(1), masked.argmax(1), -1)
    counted = confident >= 0
    joint = np.zeros((m, m), dtype=np.int64)
    np.add.at(joint, (labels[counted], confident[counted]), 1)
    return joint, confident


def calibrate_joint(joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``C~``: each row of the confident joint rescaled to that label's sample count."""
    counts = np.bincount(labels, minlength=joint.shape[0]).astype(np.float64)
    rows = joint.sum(1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, joint / rows * counts[:, None], 0.0)


def find_label_issues(probs: np.ndarray, labels: np.ndarray,
                      method: str = "prune_by_noise_rate") -> tuple[np.ndarray, np.ndarray]:
    """Confident learning's label issues (see the module docstring).

    Parameters
    ----------
    probs : (n, m) float array
        Out-of-sample predicted probabilities (rows sum to 1).
    labels : (n,) int array
        The given labels, in ``[0, m)``.
    method : str
        ``prune_by_noise_rate``, ``prune_by_class`` or ``both``.

    Returns
    -------
    is_issue : (n,) bool
    suggested : (n,) int64
        For an issue, the class it was flagged for; otherwise the most probable class.
    """
    if method not in METHODS:
        raise ConfigError(f"label_issues method {method!r} is unknown; valid: "
                          f"{', '.join(METHODS)}.")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, m = probs.shape
    rows = np.arange(n)
    joint, _ = confident_joint(probs, labels)
    cal = calibrate_joint(joint, labels)
    self_conf = probs[rows, labels]
    suggested = probs.argmax(1)
    by_rate = np.zeros(n, bool)
    flagged_for = np.full(n, -1)
    best_margin = np.full(n, -np.inf)
    by_class = np.zeros(n, bool)
    for i in range(m):
        members = np.flatnonzero(labels == i)
        if members.size == 0:
            continue
        for j in range(m):
            count = int(np.round(cal[i, j]))
            if j == i or count == 0:
                continue
            margin = probs[members, j] - probs[members, i]
            pos = np.argsort(-margin, kind="stable")[:count]
            top = members[pos]
            by_rate[top] = True
            better = margin[pos] > best_margin[top]
            best_margin[top[better]] = margin[pos][better]
            flagged_for[top[better]] = j
        off = int(np.round(cal[i].sum() - cal[i, i]))
        if off > 0:
            by_class[members[np.argsort(self_conf[members], kind="stable")[:off]]] = True
    issue = {"prune_by_noise_rate": by_rate, "prune_by_class": by_class,
             "both": by_rate & by_class}[method]
    issue = issue & (suggested != labels)  # the model agrees with the label: not an issue
    # The class an issue was flagged for: the noise-rate pair with the largest margin, else
    # the most probable class.
    suggested = np.where(issue & (flagged_for >= 0), flagged_for, suggested)
    return issue, suggested.astype(np.int64)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float,
                 iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(D, m)`` and bias ``(m,)`` of a softmax regression minimising the mean
    cross-entropy + ``l2 * |W|^2`` (scipy's L-BFGS-B, analytic gradient)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    n, d = x.shape
    onehot = np.zeros((n, num_classes))
    onehot[np.arange(n), y] = 1.0

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[:d * num_classes].reshape(d, num_classes)
        logp = log_softmax(x @ w + theta[d * num_classes:], axis=1)
        diff = (np.exp(logp) - onehot) / n
        loss = -(logp * onehot).sum() / n + l2 * (w * w).sum()
        grad = np.concatenate([(x.T @ diff + 2 * l2 * w).ravel(), diff.sum(0)])
        return float(loss), grad

    res = minimize(loss_grad, np.zeros(d * num_classes + num_classes), jac=True,
                   method="L-BFGS-B", options={"maxiter": iterations})
    return res.x[:d * num_classes].reshape(d, num_classes), res.x[d * num_classes:]


def cross_validated_probs(features: np.ndarray, labels: np.ndarray, num_classes: int,
                          folds: int = 5, seed: int = 0, l2: float = 1e-3,
                          iterations: int = 200) -> np.ndarray:
    """``(n, m)`` out-of-fold probabilities of a multinomial logistic regression.

    The samples are split into ``folds`` random folds (``seed``); each fold is
    scored by a model fitted (L-BFGS, at most ``iterations``, L2 penalty ``l2``
    on standardised features) on the others only.
    """
    n = len(labels)
    if folds < 2 or folds > n:
        raise ConfigError(f"label_issues needs 2 <= folds <= {n} samples, got folds={folds}.")
    x = np.asarray(features, dtype=np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    y = np.asarray(labels, dtype=np.int64)
    fold = np.random.default_rng(seed).permutation(n) % folds
    out = np.zeros((n, num_classes), dtype=np.float32)
    for f in range(folds):
        train, test = fold != f, fold == f
        # Small products: one BLAS thread is faster, and far faster on a busy machine
        # (threads spin waiting for each other).
        with threadpool_limits(1, user_api="blas"):
            w, b = fit_logistic(x[train], y[train], num_classes, l2, iterations)
        logits = x[test] @ w + b
        e = np.exp(logits - logits.max(1, keepdims=True))
        out[test] = e / e.sum(1, keepdims=True)
    return out


# Datasets made of another's training images: the embedded mnist-5k's 5,000 digits are all
# MNIST training images (checked by pixel hash), whichever of its splits.
TRAINING_SUBSETS = {"mnist-5k": "mnist"}


def trained_on(meta: dict, dataset_name: str, split: str) -> bool:
    """Whether a run (its run.json ``meta``) was trained on this dataset split's images: its
    recorded dataset's ``train`` split (any ``train`` split when the run does not record
    one), including a subset of those images (:data:`TRAINING_SUBSETS`)."""
    recorded = meta.get("dataset")
    if recorded is None or recorded == dataset_name:
        return split == "train"
    if TRAINING_SUBSETS.get(dataset_name) == recorded:  # every image of it was trained on
        return True
    # trained on the subset's train split: part of the parent's train split was seen
    return TRAINING_SUBSETS.get(recorded) == dataset_name and split == "train"


@register
class LabelIssues(Step):
    """Confident learning on out-of-sample probabilities (see the module docstring).

    Artifact arrays
    ---------------
    label_issue_score : (N,) float32, 1 - out-of-sample probability of the label
    is_label_issue : (N,) bool
    suggested_label : (N,) int64
    probs : (N, C) float32, the out-of-sample probabilities used
    """

    name = "label_issues"
    datasets = ("main",)
    order = 90
    version = 2  # 2: mnist-5k counted as MNIST training images
    requires = ("inference",)
    declares = (
        Column("label_issue_score", "numeric", unit="0-1",
               description="1 - the out-of-sample probability of the given label: higher = "
                           "the label is more likely wrong.", worse="higher"),
        Column("is_label_issue", "bool", description="Confident learning (prune by noise "
               "rate) flags the label as likely wrong."),
        Column("suggested_label", "class", description="The class the sample probably is "
               "(the one it was flagged for, else the most probable one)."),
    )

    @dataclass(frozen=True)
    class Config:
        method: str = "prune_by_noise_rate"
        folds: int = 5
        seed: int = 0
        cross_validate: str = "auto"  # auto | always | never

    def key_extra(self, model) -> object:
        return {"trained_on": model.meta.get("dataset")}

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        if config.cross_validate not in ("auto", "always", "never"):
            raise ConfigError(f"label_issues cross_validate must be auto, always or never, "
                              f"got {config.cross_validate!r}.")
        inf = ctx.inputs["inference"]
        head = ctx.model.task.heads[0]
        labels = inf[head_key("target", head.name)].astype(np.int64)
        ds = ctx.dataset
        cv = config.cross_validate == "always" or (
            config.cross_validate == "auto" and trained_on(ctx.model.meta, ds.name, ds.split))
        valid = (labels >= 0) & (labels < head.num_classes)
        if cv:
            probs = np.full((len(labels), head.num_classes), np.nan, np.float32)
            probs[valid] = cross_validated_probs(inf["embedding"][valid], labels[valid],
                                                 head.num_classes, config.folds, config.seed)
        else:
            probs = inf[head_key("probs", head.name)].astype(np.float32)
        issue = np.zeros(len(labels), bool)
        suggested = np.full(len(labels), -1, np.int64)
        issue[valid], suggested[valid] = find_label_issues(probs[valid], labels[valid],
                                                           config.method)
        score = np.full(len(labels), np.nan, np.float32)
        score[valid] = 1.0 - probs[valid, labels[valid]]
        log.info("label_issues: %d of %d flagged (%s probabilities)", int(issue.sum()),
                 len(labels), "cross-validated" if cv else "the model's")
        return Artifact({"label_issue_score": score, "is_label_issue": issue,
                         "suggested_label": suggested, "probs": probs},
                        summary={"cross_validated": bool(cv), "head": head.name,
                                 "n_issues": int(issue.sum())})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        return {c: artifact[c] for c in ("label_issue_score", "is_label_issue",
                                         "suggested_label")}
