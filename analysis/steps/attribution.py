"""``attribution``: heatmaps for a chosen set of samples (e.g. the misclassified)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.attribution import attribute, get_method, resolve_gradcam_layer
from analysis.executor import BatchJob
from analysis.registry import Plan, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError
from core.tasks import head_key

SUBSETS = ("misclassified", "highest_loss", "all")
TARGETS = ("pred", "label")


def select_subset(subset: str, pred: np.ndarray, labels: np.ndarray, loss: np.ndarray,
                  limit: int) -> np.ndarray:
    """Sorted sample indices of ``subset``, at most ``limit`` (highest loss first kept)."""
    if subset == "misclassified":
        idx = np.flatnonzero(pred != labels)
    elif subset == "highest_loss":
        idx = np.arange(len(loss))
    elif subset == "all":
        return np.arange(min(limit, len(loss)))
    else:
        raise ConfigError(f"Unknown attribution subset {subset!r}; valid: {', '.join(SUBSETS)}.")
    order = np.argsort(-loss[idx], kind="stable")[:limit]
    return np.sort(idx[order])


ATTRIBUTION_BATCH = 16  # samples per executor batch


def attribution_batches(model, arrays: dict[str, np.ndarray], device, method: str,
                        n_steps: int, head: str, layer: str | None):
    """The per-batch work of :class:`Attribution` (a :class:`~analysis.executor.BatchJob`'s
    ``build``) over the subset's positions: ``fn(start, stop)`` gives ``heatmaps``
    ``(B, H, W)`` float32."""
    meta = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("meta:")}

    def fn(start: int, stop: int) -> dict[str, np.ndarray]:
        return {"heatmaps": attribute(model, arrays["image"][start:stop],
                                      arrays["target"][start:stop], method, device=device,
                                      n_steps=n_steps, head=head, layer=layer,
                                      metadata={k: v[start:stop] for k, v in meta.items()})}

    return fn


@register
class Attribution(Step):
    """Captum heatmaps of a subset, for one head's predicted (or true) class.

    Artifact arrays
    ---------------
    indices : (M,) int64 sample indices
    targets : (M,) int64 explained classes of the head
    heatmaps : (M, H, W) float32
    """

    name = "attribution"
    # 2: per head. 3: GradCAM's default layer is the last conv block's output (was the last
    # nn.Conv2d) and the config names the layer, so every method's key changes (the config
    # gained a field); occlusion's window scales with the image (28x28 keeps 4x4, stride 2).
    version = 3
    requires = ("inference",)
    datasets = ("main",)
    order = 150

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return plan.attribution is not None

    @classmethod
    def plan_options(cls, plan: Plan) -> dict:
        opts = {"method": plan.attribution}
        if plan.attribution == "gradcam" and plan.gradcam_layer:
            opts["layer"] = plan.gradcam_layer
        return opts

    @dataclass(frozen=True)
    class Config:
        method: str = "integrated_gradients"
        head: str = ""  # the explained head; "" = the task's first
        subset: str = "misclassified"
        target: str = "pred"
        limit: int = 200
        n_steps: int = 50
        layer: str = ""  # GradCAM's layer (see attribution.conv_layer_choices); "" = default

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        get_method(config.method)
        if config.method == "gradcam":
            resolve_gradcam_layer(ctx.model, config.layer or None, ctx.dataset.images.shape[1:])
        if config.target not in TARGETS:
            raise ConfigError(f"attribution target {config.target!r}: use one of {TARGETS}.")
        inf = ctx.inputs["inference"]
        task = ctx.model.task
        head = task.head(config.head).name
        pred, truth = inf[head_key("pred", head)], inf[head_key("target", head)]
        idx = select_subset(config.subset, pred, truth, inf[head_key("loss", head)], config.limit)
        targets = pred[idx] if config.target == "pred" else truth[idx]
        meta = task.sample_metadata(ctx.dataset)
        arrays = {"image": ctx.dataset.images[idx], "target": targets,
                  **{f"meta:{k}": np.asarray(v)[idx] for k, v in meta.items()}}
        job = BatchJob(attribution_batches, arrays, ctx.model,
                       {"method": config.method, "n_steps": config.n_steps, "head": head,
                        "layer": config.layer or None})
        out = ctx.executor.map_batches(job, len(idx), ATTRIBUTION_BATCH, device=ctx.device,
                                       desc=f"attribution ({config.method})",
                                       progress=ctx.progress)
        h, w = ctx.dataset.images.shape[-2:]
        heatmaps = out["heatmaps"] if len(idx) else np.zeros((0, h, w), np.float32)
        return Artifact({"indices": idx.astype(np.int64), "targets": targets.astype(np.int64),
                         "heatmaps": heatmaps}, summary={"count": int(len(idx)), "head": head})
