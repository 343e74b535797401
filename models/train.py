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

from analysis.datasets import ImageDataset, load_dataset
from analysis.device import resolve_device
from analysis.errors import ConfigError
from models import zoo
from models.checkpoint import MNIST_MEAN, MNIST_STD, resolve_factory, save_run

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


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on normalised ``images``."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size])
        y = labels[start:start + batch_size]
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(labels), correct / len(labels)


def _to_tensors(ds: ImageDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.from_numpy(ds.images).to(device).float() / 255.0 - MNIST_MEAN) / MNIST_STD
    return x, torch.from_numpy(ds.labels).to(device)


def train(cfg: TrainConfig, out: str | Path, *, device: str = "auto",
          data_root: str | None = None, progress: bool = True) -> dict:
    """Train ``cfg.arch`` on ``cfg.dataset`` and write a run folder to ``out``.

    Returns
    -------
    dict
        The run's metadata, as written to ``run.json``.
    """
    cfg.validate()
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train_ds = load_dataset(cfg.dataset, "train", data_root=data_root, limit=cfg.limit)
    try:
        test_ds = load_dataset(cfg.dataset, "test", data_root=data_root)
    except ConfigError:
        test_ds = None  # a dataset without a test split is evaluated on train only
    if cfg.model_spec:
        model = resolve_factory(cfg.model_spec)()
    else:
        model = zoo.build(cfg.arch, num_classes=train_ds.num_classes)
    model.to(dev)
    x_train, y_train = _to_tensors(train_ds, dev)
    x_test, y_test = _to_tensors(test_ds, dev) if test_ds is not None else (None, None)
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
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}",
                   disable=not progress, unit="batch", leave=True)
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if cfg.augment:
                # Augment in pixel space so zero padding is background, then re-normalise.
                pix = xb * MNIST_STD + MNIST_MEAN
                xb = (random_affine(pix, generator=gen) - MNIST_MEAN) / MNIST_STD
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen}
        if x_test is not None:
            record["test_loss"], record["test_acc"] = evaluate(model, x_test, y_test)
        record["elapsed_s"] = time.perf_counter() - started
        history.append(record)
        msg = f"epoch {epoch}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
        if "test_acc" in record:
            msg += f" | test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f}"
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
    }
    save_run(out, model.cpu(), meta)
    return meta
