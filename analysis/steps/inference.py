"""``inference``: logits, probabilities, loss, confidence and embeddings in one pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from analysis.forward import auto_batch_size, capture_embedding, image_batches
from analysis.registry import Step, StepContext, register
from cache import Artifact


@register
class Inference(Step):
    """One batched forward pass under ``torch.inference_mode``.

    Artifact arrays
    ---------------
    logits, probs : (N, C) float32
    pred : (N,) int64
    loss : (N,) float32, per-sample cross-entropy (higher is worse)
    embedding : (N, D) float32, from the model's embedding layer
    """

    name = "inference"
    version = 1

    @dataclass(frozen=True)
    class Config:
        batch_size: int = 0  # 0: chosen for the device (see forward.auto_batch_size)

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        model = ctx.model.module.to(ctx.device).eval()
        labels = torch.as_tensor(ctx.dataset.labels).to(ctx.device)
        logits_parts, emb_parts = [], []
        n = len(ctx.dataset)
        bs = auto_batch_size(ctx.device, config.batch_size)
        with torch.inference_mode(), capture_embedding(ctx.model) as captured:
            batches = image_batches(ctx.model, ctx.dataset.images, ctx.device, bs)
            for _, x in tqdm(batches, total=-(-n // bs), desc="inference",
                             disable=not ctx.progress, leave=False):
                logits_parts.append(model(x).float())
                emb_parts.append(captured.pop().float())
        logits = torch.cat(logits_parts)
        probs = logits.softmax(1)
        # The loss is only defined for labels the model can output; an extra
        # (out-of-distribution) dataset with more classes gets NaN there.
        in_range = labels < logits.shape[1]
        loss = torch.full((len(labels),), float("nan"), device=logits.device)
        loss[in_range] = F.cross_entropy(logits[in_range], labels[in_range], reduction="none")
        conf, pred = probs.max(1)
        return Artifact({
            "logits": logits.cpu().numpy(),
            "probs": probs.cpu().numpy(),
            "pred": pred.cpu().numpy().astype(np.int64),
            "loss": loss.cpu().numpy(),
            "confidence": conf.cpu().numpy(),
            "embedding": torch.cat(emb_parts).cpu().numpy(),
        }, summary={
            "accuracy": float((pred == labels).float().mean().item()),
            "mean_loss": float(loss[in_range].mean().item()) if in_range.any() else None,
            "embedding_dim": int(emb_parts[0].shape[1]),
        })

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        probs = artifact["probs"]
        top2 = np.sort(probs, axis=1)[:, -2:]
        return {
            "pred": artifact["pred"],
            "loss": artifact["loss"],
            "confidence": artifact["confidence"],
            "uncertainty": 1.0 - artifact["confidence"],
            "margin": top2[:, 1] - top2[:, 0],
            "entropy": -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1).astype(np.float32),
        }
