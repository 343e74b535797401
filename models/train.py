"""The training loop: batched on-device tensors, optional augmentation, tqdm progress."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core.datasets import ImageDataset, load_dataset
from core.device import resolve_device
from core.errors import ConfigError
from core.tasks import Task, resolve_task
from models import zoo
from models.checkpoint import resolve_factory, save_run
from models.inputs import NORMALISATIONS

# Training normalises with MNIST's statistics (recorded in run.json's ``input``).
(MNIST_MEAN,), (MNIST_STD,) = NORMALISATIONS["MNIST mean/std"]

log = logging.getLogger(__name__)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("onecycle", "none")


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (all recorded in ``run.json``)."""

    arch: str = "mnist_cnn"
    dataset: str = "mnist"
    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 3e-3
    schedule: str = "onecycle"
    weight_decay: float = 0.0
    momentum: float = 0.9
    limit: int | None = None
    augment: bool = False
    seed: int = 0
    model_spec: str | None = None
    task: str | None = None  # None: plain classification (see core.tasks)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}.")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer!r}: use one of "
                              f"{', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}.")


def random_affine(x: torch.Tensor, degrees: float = 8.0, shift: float = 0.08,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample small rotations and shifts of a ``(N, C, H, W)`` batch (on its device)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    tx, ty = ((torch.rand(2, n, generator=generator) * 2 - 1) * shift * 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class TaskData:
    """A dataset prepared for training: normalised images, side inputs and targets on a device.

    Attributes
    ----------
    images : (N, C, H, W) float32, normalised
    metadata : column -> (N,) int64 (the task's side inputs, e.g. ``number``)
    targets : head -> (N,) int64
    """

    images: torch.Tensor
    metadata: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]

    @classmethod
    def build(cls, task: Task, ds: ImageDataset, device: torch.device) -> TaskData:
        x = (torch.from_numpy(ds.images).to(device).float() / 255.0 - MNIST_MEAN) / MNIST_STD
        meta = task.sample_metadata(ds)
        return cls(x, {k: torch.as_tensor(v).to(device) for k, v in meta.items()},
                   {k: torch.as_tensor(v).to(device)
                    for k, v in task.sample_targets(ds, meta).items()})

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return (self.images[idx], {k: v[idx] for k, v in self.metadata.items()},
                {k: v[idx] for k, v in self.targets.items()})


def task_loss(task: Task, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
              reduction: str = "mean") -> torch.Tensor:
    """The training loss: the heads' cross-entropies, each times its weight, summed."""
    return sum(h.weight * F.cross_entropy(logits[h.name], targets[h.name], reduction=reduction)
               for h in task.heads)


@torch.inference_mode()
def evaluate(model: nn.Module, task: Task, data: TaskData,
             batch_size: int = 1000) -> tuple[float, dict[str, float], dict[str, float]]:
    """Mean total loss, and per head the accuracy and mean cross-entropy (eval mode)."""
    model.eval()
    total = 0.0
    correct = dict.fromkeys(task.head_names, 0)
    losses = dict.fromkeys(task.head_names, 0.0)
    for start in range(0, len(data), batch_size):
        x, meta, y = data.batch(slice(start, start + batch_size))
        logits = task.split_outputs(model(*task.model_inputs(x, meta)))
        total += task_loss(task, logits, y, reduction="sum").item()
        for h in task.head_names:
            correct[h] += (logits[h].argmax(1) == y[h]).sum().item()
            losses[h] += F.cross_entropy(logits[h], y[h], reduction="sum").item()
    n = len(data)
    return total / n, {h: c / n for h, c in correct.items()}, {h: v / n for h, v in losses.items()}


def train(cfg: TrainConfig, out: str | Path, *, device: str = "auto",
          data_root: str | None = None, progress: bool = True) -> dict:
    """Train ``cfg.arch`` on ``cfg.dataset`` and write a run folder to ``out``.

    Returns
    -------
    dict
        The run's metadata, as written to ``run.json``.
    """
    cfg.validate()
    if not cfg.model_spec:
        zoo.check_task(cfg.arch, cfg.task)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train_ds = load_dataset(cfg.dataset, "train", data_root=data_root, limit=cfg.limit)
    try:
        test_ds = load_dataset(cfg.dataset, "test", data_root=data_root)
    except ConfigError:
        test_ds = None  # a dataset without a test split is evaluated on train only
    task = resolve_task(cfg.task, train_ds.class_names)
    task.check_dataset(train_ds, what=f"--task {task.name}")
    if cfg.model_spec:
        model = resolve_factory(cfg.model_spec)()
    else:
        model = zoo.build(cfg.arch, num_classes=train_ds.num_classes)
    model.to(dev)
    train_data = TaskData.build(task, train_ds, dev)
    test_data = TaskData.build(task, test_ds, dev) if test_ds is not None else None
    heads = task.head_names
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    opt = _make_optimizer(cfg, model.parameters())
    sched = None
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(train_ds), generator=gen).to(dev)
        seen, loss_sum = 0, 0.0
        correct = dict.fromkeys(heads, 0)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}",
                   disable=not progress, unit="batch", leave=True)
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, metab, yb = train_data.batch(idx)
            if cfg.augment:
                # Augment in pixel space so zero padding is background, then re-normalise.
                pix = xb * MNIST_STD + MNIST_MEAN
                xb = (random_affine(pix, generator=gen) - MNIST_MEAN) / MNIST_STD
            logits = task.split_outputs(model(*task.model_inputs(xb, metab)))
            loss = task_loss(task, logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            for h in heads:
                correct[h] += (logits[h].argmax(1) == yb[h]).sum().item()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                **{f"acc_{h}": f"{correct[h] / seen:.4f}" for h in heads})
        record = {"epoch": epoch, "train_loss": loss_sum / seen,
                  "train_acc": correct[heads[0]] / seen}
        if len(heads) > 1:
            record.update({f"train_acc_{h}": correct[h] / seen for h in heads})
        if test_data is not None:
            test_loss, test_acc, test_head_loss = evaluate(model, task, test_data)
            record["test_loss"], record["test_acc"] = test_loss, test_acc[heads[0]]
            if len(heads) > 1:
                record.update({f"test_acc_{h}": test_acc[h] for h in heads})
                record.update({f"test_loss_{h}": test_head_loss[h] for h in heads})
        record["elapsed_s"] = time.perf_counter() - started
        history.append(record)
        msg = f"epoch {epoch}: train loss {record['train_loss']:.4f}"
        if test_data is not None:
            msg += f" | test loss {record['test_loss']:.4f} " + " ".join(
                f"acc{'' if len(heads) == 1 else '_' + h} {test_acc[h]:.4f}" for h in heads)
        if progress:
            tqdm.write(msg)
        else:
            log.info(msg)
    model.eval()
    meta = {
        "format": 1,
        "arch": cfg.arch if not cfg.model_spec else cfg.model_spec,
        "model_spec": cfg.model_spec,
        "dataset": train_ds.name,
        "class_names": list(train_ds.class_names),
        "train_samples": len(train_ds),
        "hyperparameters": asdict(cfg),
        "history": history,
        "parameters": zoo.count_parameters(model),
        "seed": cfg.seed,
        "device": str(dev),
        "wall_time_s": time.perf_counter() - started,
        "input": {"shape": list(train_ds.images.shape[1:]), "mean": MNIST_MEAN, "std": MNIST_STD},
        "best_test_acc": max((h.get("test_acc", 0.0) for h in history), default=None),
        "best_train_acc": max(h["train_acc"] for h in history),
        "task": cfg.task if cfg.task not in (None, "classification") else None,
        "heads": task.describe()["heads"],
    }
    if len(heads) > 1 and test_data is not None:
        meta["best_test_acc_per_head"] = {
            h: max(r[f"test_acc_{h}"] for r in history) for h in heads}
        meta["final_test_acc_per_head"] = {h: history[-1][f"test_acc_{h}"] for h in heads}
    if not cfg.model_spec and cfg.arch in zoo.EMBEDDING_LAYERS:
        meta["embedding_layer"] = zoo.EMBEDDING_LAYERS[cfg.arch]
    save_run(out, model.cpu(), meta)
    return meta
