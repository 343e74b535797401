"""Checks made when a session opens, before anything heavy runs, and loading extra datasets."""

from __future__ import annotations

from core.datasets import ImageDataset, load_dataset
from core.errors import ConfigError
from models.checkpoint import LoadedModel
from models.inputs import format_shape


def check_classes(model: LoadedModel, dataset: ImageDataset) -> None:
    """The analysed dataset must be one the model's task is defined on (its classes)."""
    names = model.class_names
    if names is not None and len(names) != dataset.num_classes and model.task_spec in (
            None, "", "classification"):
        raise ConfigError(f"The model was trained on {len(names)} classes "
                          f"({model.meta.get('dataset', '?')}) but dataset {dataset.key} has "
                          f"{dataset.num_classes}; analyse it with --extra-dataset instead.")
    model.bind_task(dataset.class_names)
    model.task.check_dataset(dataset, what=f"Run {model.name}")


def check_forward(model: LoadedModel, dataset: ImageDataset) -> None:
    """Run the model on one sample, so a model that cannot read this input fails now,
    with the shapes and the flags that fix it, not after minutes of work."""
    import torch

    from analysis.forward import model_batches, model_lock

    one = dataset.head(1)
    try:
        with model_lock(model), torch.inference_mode():
            _, args = next(model_batches(model, one, torch.device("cpu"), 1))
            model.module(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is reported
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"Model {model.name} fails on one {format_shape(model.input_shape)} image of "
            f"{dataset.key}: {type(exc).__name__}: {first}. Declare the input it expects with "
            "--input-size CxHxW (images are resized and converted to it) and --mean/--std."
        ) from None


def load_extra(name: str, split: str, data_root, limit: int | None,
               image_shape: tuple[int, int, int],
               analysed: ImageDataset | None = None) -> ImageDataset:
    """Load an extra dataset ``name[:split]``; falls back to its only split.

    ``corrupt:NAME`` corrupts ``analysed`` (see :mod:`core.corruptions`).
    """
    from core.datasets import SPLITS_AVAILABLE

    if name.startswith("corrupt:"):
        return load_dataset(name, split, data_root=data_root, limit=limit,
                            image_shape=image_shape, fallback=False, base=analysed)
    if not name.startswith(("folder:", "csv:", "mnist-scale:")) and name.count(":") == 1:
        name, split = name.split(":")
    if split not in SPLITS_AVAILABLE.get(name, (split,)):
        split = SPLITS_AVAILABLE[name][0]
    return load_dataset(name, split, data_root=data_root, limit=limit, image_shape=image_shape,
                        fallback=False)
