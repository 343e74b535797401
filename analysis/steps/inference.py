"""``inference``: logits, probabilities, loss, confidence and embeddings in one pass."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from analysis.executor import BatchJob
from analysis.forward import auto_batch_size, batch_args, capture_embedding, model_arrays
from analysis.registry import Column, Step, StepContext, register
from analysis.stochastic import StochasticSplit, kept_trunk, make_split, trunk_shapes
from cache import Artifact
from cache.keys import OMIT_AT_DEFAULT
from core.tasks import head_key

log = logging.getLogger(__name__)


def per_head_outputs(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Probabilities, prediction, confidence and per-sample loss of one head.

    ``logits`` (N, C), ``targets`` (N,). The loss is only defined for targets
    the head can output; others (an out-of-distribution dataset's classes)
    get NaN.
    """
    probs = logits.softmax(1)
    in_range = (targets >= 0) & (targets < logits.shape[1])
    loss = torch.full((len(targets),), float("nan"), device=logits.device)
    loss[in_range] = F.cross_entropy(logits[in_range], targets[in_range], reduction="none")
    conf, pred = probs.max(1)
    return {"logits": logits, "probs": probs, "pred": pred, "loss": loss, "confidence": conf}


def probability_columns(probs: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    """``margin`` (top-2 gap) and ``entropy`` (nats) of ``(N, C)`` probabilities."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return {
        f"{prefix}margin": top2[:, 1] - top2[:, 0],
        f"{prefix}entropy": (-(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
                             ).astype(np.float32),
    }


def inference_batches(model, arrays: dict[str, np.ndarray], device: torch.device,
                      trunk: list[str] | None = None):
    """The per-batch work of :class:`Inference` (a :class:`~analysis.executor.BatchJob`'s
    ``build``): ``fn(start, stop)`` gives ``logits:HEAD`` ``(B, C_h)`` and ``embedding``
    ``(B, D)``, float32.

    With ``trunk`` (the boundary's node names, from :func:`keepable_trunk`), the
    pass runs as the trunk then the tail with dropout off (the same computation as
    the model's forward), and ``fn`` also gives the trunk's boundary as ``trunk:I``
    ``(B, ...)`` arrays, for MC dropout to run the tail alone.
    """
    module = model.module.to(device).eval()
    task = model.task
    split = make_split(model, quiet=True) if trunk else None
    if trunk and (split is None or split.boundary_names != trunk):
        raise RuntimeError(f"inference: {model.arch} traced here to another trunk than "
                           "where the run decided to keep it")

    def fn(start: int, stop: int) -> dict[str, np.ndarray]:
        args = batch_args(model, arrays, start, stop, device)
        kept = {}
        with torch.inference_mode(), capture_embedding(model) as captured:
            if split is None:
                heads = task.split_outputs(module(*args))
            else:
                values = split.trunk_module(*args)
                kept = kept_trunk(values)  # before the tail, which may change them in place
                heads = task.split_outputs(split.tail_module(*values))
        out = {f"logits:{h}": v.float().cpu().numpy() for h, v in heads.items()}
        out["embedding"] = captured.pop().float().cpu().numpy()
        return {**out, **kept}

    return fn


def keepable_trunk(model, arrays: dict[str, np.ndarray]) -> StochasticSplit | None:
    """The model's trunk/tail split when its trunk is worth keeping for MC dropout: the
    model has dropout, its boundary is small and per sample
    (:func:`analysis.stochastic.trunk_shapes`), and the trunk then the tail give exactly
    its forward pass. Decided once per run, where the model is."""
    split = make_split(model, quiet=True)
    if split is None or len(split.tail) < 2:  # untraceable, or no dropout (only the output)
        return None
    device = next((p.device for p in model.module.parameters()), torch.device("cpu"))
    model.module.eval()
    if trunk_shapes(split, model, device) is None or not _same_as_forward(model, split, arrays,
                                                                          device):
        return None
    return split


def _same_as_forward(model, split, arrays: dict[str, np.ndarray], device: torch.device) -> bool:
    """Whether the trunk then the tail give exactly the model's own forward pass (outputs
    and embedding) on the first 8 samples; the traced graph could miss what a forward
    does outside torch (the trunk is then not kept, and the plain pass runs)."""
    n = len(arrays["image"])
    if n == 0:
        return False
    args = batch_args(model, arrays, 0, min(n, 8), device)
    with torch.inference_mode(), capture_embedding(model) as captured:
        plain = model.task.split_outputs(model.module(*args))
        traced = model.task.split_outputs(split.tail_module(*split.trunk_module(*args)))
    same = plain.keys() == traced.keys() and all(torch.equal(plain[h], traced[h])
                                                 for h in plain)
    same = same and len(captured) == 2 and torch.equal(captured[0], captured[1])
    if not same:
        log.warning("%s: its torch.fx trace does not give exactly its forward pass on the "
                    "first samples (Python state in forward?); the trunk is not kept, and "
                    "MC dropout's traced tail may not be the model either", model.arch)
    return same


@register
class Inference(Step):
    """One batched forward pass under ``torch.inference_mode``, every head at once.

    Artifact arrays (``h`` = each head of the model's task)
    ---------------------------------------------------------
    logits@h, probs@h : (N, C_h) float32
    pred@h : (N,) int64
    loss@h : (N,) float32, per-sample cross-entropy (higher is worse)
    confidence@h : (N,) float32, max probability
    target@h : (N,) int64, the head's target class
    total_loss : (N,) float32, the heads' losses weighted as in training
    embedding : (N, D) float32, from the model's embedding layer
    trunk:I : (N, ...) float, when the model has dropout and its trunk could be kept: the
        values MC dropout's stochastic tail reads (their per-sample shapes in the
        summary's ``trunk_shapes``)
    """

    name = "inference"
    # 2: per-head arrays. Not bumped for keep_trunk: the arrays of earlier results are
    # the same; MC dropout runs the trunk itself when a result has none kept.
    version = 2
    order = 10
    # label, label_name, pred_name and correct are made by the sample table from
    # this step's targets and predictions (they need the dataset's class names).
    declares = (
        Column("label", "class", words="true class", per_head=True,
               description="The sample's class as the dataset labels it."),
        Column("label_name", "text", words="true class", per_head=True,
               description="The name of the sample's labelled class."),
        Column("pred", "class", words="predicted class", per_head=True,
               description="The class the model predicts (highest probability)."),
        Column("pred_name", "text", words="predicted class", per_head=True,
               description="The name of the predicted class."),
        Column("correct", "bool", words="prediction right", per_head=True,
               description="Whether the prediction equals the label."),
        Column("loss", "numeric", "cross-entropy, nats", worse="higher", per_head=True,
               words="loss", description="Cross-entropy of the labelled class."),
        Column("confidence", "numeric", "probability", worse="lower", per_head=True,
               words="confidence", description="The highest class probability."),
        Column("uncertainty", "numeric", "1 - max p", worse="higher", per_head=True,
               words="least confident", score=True, mc_twin="mc_uncertainty",
               description="One minus the highest class probability."),
        Column("margin", "numeric", "top-2 probability gap", worse="lower", per_head=True,
               words="margin over the runner-up",
               description="Highest minus second-highest class probability."),
        Column("neg_margin", "numeric", "top-2 probability gap, negated", worse="higher",
               per_head=True, words="- top-2 margin", score=True, mc_twin="mc_neg_margin",
               description="Minus the margin, so that higher is less sure like other scores."),
        Column("entropy", "numeric", "nats", worse="higher", per_head=True,
               words="predictive entropy", score=True, mc_twin="mc_entropy",
               description="Entropy of the predicted class distribution."),
        Column("total_loss", "numeric", "cross-entropy, nats", worse="higher",
               words="total loss (all heads)",
               description="The heads' losses weighted as in training."),
    )

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 0  # 0: chosen for the device (see forward.auto_batch_size)
        # Keep each sample's trunk output for MC dropout when the model has dropout and
        # the trunk output is small (keepable_trunk), whether or not the run plans MC
        # dropout. Out of the key when on: the other arrays are the very same as before.
        keep_trunk: bool = field(default=True, metadata=OMIT_AT_DEFAULT)

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        task = ctx.model.task
        targets = task.sample_targets(ctx.dataset)
        n = len(ctx.dataset)
        inputs = model_arrays(ctx.model, ctx.dataset)
        split = keepable_trunk(ctx.model, inputs) if config.keep_trunk else None
        job = BatchJob(inference_batches, inputs, ctx.model,
                       {"trunk": split.boundary_names if split else None})
        bs = auto_batch_size(ctx.executor.compute_device(ctx.device), config.batch_size)
        out = ctx.executor.map_batches(job, n, bs, device=ctx.device, desc="inference",
                                       progress=ctx.progress)
        parts = {h: torch.from_numpy(out[f"logits:{h}"]) for h in task.head_names}
        arrays: dict[str, np.ndarray] = {}
        summary: dict = {"heads": task.head_names, "embedding_dim": int(out["embedding"].shape[1])}
        total = torch.zeros(n)
        for head in task.heads:
            y = torch.as_tensor(targets[head.name])
            out_h = per_head_outputs(parts[head.name], y)
            total += head.weight * out_h["loss"]
            for field_name, value in out_h.items():
                arrays[head_key(field_name, head.name)] = value.cpu().numpy()
            pred_key = head_key("pred", head.name)
            arrays[pred_key] = arrays[pred_key].astype(np.int64)
            arrays[head_key("target", head.name)] = targets[head.name].astype(np.int64)
            valid = ~torch.isnan(out_h["loss"])
            summary[head.name] = {
                "accuracy": float((out_h["pred"] == y).float().mean().item()),
                "mean_loss": float(out_h["loss"][valid].mean().item()) if valid.any() else None,
            }
        first = summary[task.heads[0].name]
        summary["accuracy"], summary["mean_loss"] = first["accuracy"], first["mean_loss"]
        arrays["total_loss"] = total.cpu().numpy()
        arrays["embedding"] = out["embedding"]
        trunk = sorted((k for k in out if k.startswith("trunk:")), key=lambda k: int(k[6:]))
        if trunk:  # for MC dropout's tail (see analysis.stochastic)
            arrays.update({k: out[k] for k in trunk})
            summary["trunk_shapes"] = [list(out[k].shape[1:]) for k in trunk]
            summary["trunk_nodes"] = split.boundary_names
        return Artifact(arrays, summary=summary)

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"total_loss": artifact["total_loss"]}
        for head in artifact.summary["heads"]:
            def get(field_name: str, head: str = head) -> np.ndarray:
                return artifact[head_key(field_name, head)]
            cols = {"pred": get("pred"), "loss": get("loss"), "confidence": get("confidence"),
                    "uncertainty": 1.0 - get("confidence"), **probability_columns(get("probs"))}
            cols["neg_margin"] = -cols["margin"]
            out.update({head_key(c, head): v for c, v in cols.items()})
        return out
