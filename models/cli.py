"""``python -m models``: train a zoo (or your own) architecture and write a run folder."""

from __future__ import annotations

import argparse
import logging
import sys

from cache.numba_dir import configure_numba_cache
from core.errors import USER_ERRORS
from models import zoo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and write runs/NAME/{model.pt,run.json}")
    t.add_argument("--arch", default="mnist_cnn", help=f"one of {', '.join(zoo.ARCHITECTURES)}")
    t.add_argument("--model", dest="model_spec", default=None,
                   help="your own model: package.module:factory returning an nn.Module")
    t.add_argument("--task", default=None,
                   help="classification (default), mnist-sum (with --arch sum_net), or "
                        "package.module:name for your own core.tasks.Task")
    t.add_argument("--dataset", default="mnist")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    t.add_argument("--schedule", default="onecycle", choices=["onecycle", "none"])
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--limit", type=int, default=None, help="train on the first N samples")
    t.add_argument("--augment", action="store_true", help="small random rotations and shifts")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-root", default=None)
    t.add_argument("--out", required=True, help="run folder to write")
    sub.add_parser("list", help="list the zoo architectures with their parameter counts")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure_numba_cache()  # before anything imports numba (UMAP)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for name in zoo.ARCHITECTURES:
                task = zoo.ARCH_TASKS.get(name, "classification")
                print(f"{name:16s} {zoo.count_parameters(zoo.build(name)):>9,d} parameters  "
                      f"({task})")
            return 0
        from models.train import TrainConfig, train

        cfg = TrainConfig(arch=args.arch, dataset=args.dataset, epochs=args.epochs,
                          batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                          schedule=args.schedule, weight_decay=args.weight_decay,
                          limit=args.limit, augment=args.augment, seed=args.seed,
                          model_spec=args.model_spec, task=args.task)
        meta = train(cfg, args.out, device=args.device, data_root=args.data_root)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    last = meta["history"][-1]
    heads = [h["name"] for h in meta["heads"]]
    if len(heads) > 1 and "test_acc" in last:
        accs = ", ".join(f"{h} {last[f'test_acc_{h}']:.4f}" for h in heads)
        print(f"wrote {args.out}: {meta['parameters']:,d} parameters, test acc per head: "
              f"{accs}, {meta['wall_time_s']:.1f} s")
    else:
        print(f"wrote {args.out}: {meta['parameters']:,d} parameters, "
              f"test acc {last.get('test_acc', float('nan')):.4f}, {meta['wall_time_s']:.1f} s")
    return 0
