"""Models and data Loupe did not write, checked against a hand-written evaluation.

The RGB data are 32x32 patches cut from three photographs bundled with
scikit-image (label = source photo; train patches from the left half of each
photo, test patches from the right half), written as PNG files in a
``train/``/``test/`` folder layout. The 8x8 data are scikit-learn's 1,797
real digit scans. The models are trained by their own loops here, as a user
does, and the reference numbers come from reading the PNG files with PIL and
running the model by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from analysis.session import AnalysisSession
from core.errors import ConfigError
from models.inputs import spec_from_flags
from tests.conftest import BYO_DIR
from tests.core.image_writer import sklearn_digits, write_class_folder, write_manifest

CIFAR_MEAN, CIFAR_STD = "0.4914,0.4822,0.4465", "0.247,0.243,0.261"
PHOTOS = ("astronaut", "chelsea", "coffee")


@pytest.fixture(scope="module", autouse=True)
def user_code_on_path():
    if str(BYO_DIR) not in sys.path:
        sys.path.insert(0, str(BYO_DIR))


def photo_patches(half: str, per_photo: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = getattr(data, name)()[:, :, :3]
        h, w = photo.shape[:2]
        x0, x1 = (0, w // 2 - 32) if half == "left" else (w // 2, w - 32)
        for _ in range(per_photo):
            y, x = rng.integers(0, h - 32), rng.integers(x0, x1)
            patches.append(photo[y:y + 32, x:x + 32])
            labels.append(label)
    return np.stack(patches), np.array(labels)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for split, half, n, seed in (("train", "left", 120, 0), ("test", "right", 60, 1)):
        images, labels = photo_patches(half, n, seed)
        write_class_folder(root / split, images, np.array(PHOTOS)[labels])
    return root


def read_split(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The user's own loader: every PNG under ``folder/<class>/``, classes sorted."""
    classes = sorted(p.name for p in folder.iterdir())
    xs, ys = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).iterdir()):
            xs.append(np.asarray(Image.open(file).convert("RGB")))
            ys.append(label)
    x = torch.as_tensor(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0  # ToTensor()
    return x, torch.as_tensor(ys)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([float(v) for v in CIFAR_MEAN.split(",")]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in CIFAR_STD.split(",")]).view(1, 3, 1, 1)
    return (x - mean) / std


def train_user_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            F.cross_entropy(model(normalise(x[i])), y[i]).backward()
            opt.step()
    model.eval()


def hand_evaluation(model: nn.Module, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` correct and ``(N,)`` cross-entropy, in the folder's (sorted) order."""
    x, y = read_split(folder)
    with torch.no_grad():
        logits = model(normalise(x))
    loss = F.cross_entropy(logits, y, reduction="none").numpy()
    return (logits.argmax(1) == y).numpy(), loss


@pytest.fixture(scope="module", params=["small_rgb_net", "resnet18_3"])
def rgb_run(request, photo_folder, tmp_path_factory):
    import user_models

    model = getattr(user_models, request.param)()
    x, y = read_split(photo_folder / "train")
    train_user_model(model, x, y, epochs=4 if request.param == "small_rgb_net" else 2)
    weights = tmp_path_factory.mktemp("w") / f"{request.param}.pt"
    torch.save(model.state_dict(), weights)
    acc, loss = hand_evaluation(model, photo_folder / "test")
    return request.param, weights, acc, loss


def open_rgb(rgb_run, photo_folder, cache_dir, **kwargs):
    name, weights, _, _ = rgb_run
    return AnalysisSession.open(
        None, f"folder:{photo_folder}", "test", model_spec=f"user_models:{name}",
        weights=weights, cache_dir=cache_dir, device="cpu", progress=False,
        input_spec=spec_from_flags(None, CIFAR_MEAN, CIFAR_STD), **kwargs)


def test_rgb_models_match_a_hand_written_evaluation(rgb_run, photo_folder, cache_dir):
    name, _, acc, loss = rgb_run
    session = open_rgb(rgb_run, photo_folder, cache_dir, projections=("umap",), k=5,
                       mc_samples=5 if name == "small_rgb_net" else 0)
    assert session.model.input_shape == (3, 32, 32)
    assert session.dataset.images.shape == (180, 3, 32, 32)
    session.run()
    table = session.table()
    np.testing.assert_array_equal(table["correct"].to_numpy(bool), acc)  # sample by sample
    np.testing.assert_allclose(table["loss"].to_numpy(), loss, atol=1e-4)
    assert session.preprocessing()["warning"] == ""
    assert np.isfinite(session.projection("umap")).all()
    for method in ("integrated_gradients", "saliency", "gradcam", "occlusion"):
        heat = session.attribute(7, method)
        assert heat.shape == (32, 32) and np.isfinite(heat).all()


def test_a_grayscale_dataset_for_a_colour_model_names_the_flag(rgb_run, digits, data_root,
                                                               cache_dir):
    name, weights, _, _ = rgb_run
    with pytest.raises(ConfigError) as err:
        AnalysisSession.open(None, digits, "test", model_spec=f"user_models:{name}",
                             weights=weights, data_root=data_root, cache_dir=cache_dir,
                             limit=50, progress=False)
    assert "reads 3 channel(s)" in str(err.value) and "--input-size 3x28x28" in str(err.value)


class DigitNet8(nn.Module):
    """A native 8x8 digit CNN, trained on ``ToTensor()`` inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


@pytest.fixture(scope="module")
def digits8(tmp_path_factory):
    images, labels = sklearn_digits()
    root = tmp_path_factory.mktemp("digits8")
    paths = write_class_folder(root / "folder", images, labels)
    manifest = write_manifest(root / "labels.csv",
                              [{"path": str(p.relative_to(root)), "label": int(lab)}
                               for p, lab in zip(paths, labels, strict=True)],
                              ["path", "label"])
    torch.manual_seed(0)
    model = DigitNet8()
    x = torch.as_tensor(images[:, None]).float() / 255.0
    y = torch.as_tensor(labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    module = type(sys)("digit_net8")
    module.digit_net8 = DigitNet8
    sys.modules["digit_net8"] = module
    torch.save(model.state_dict(), root / "net8.pt")
    return root, manifest, model


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_native_8x8_digits_from_a_folder_and_a_manifest(digits8, kind, cache_dir):
    root, manifest, model = digits8
    name = f"folder:{root / 'folder'}" if kind == "folder" else f"csv:{manifest}"
    session = AnalysisSession.open(None, name, "test", model_spec="digit_net8:digit_net8",
                                   weights=root / "net8.pt", cache_dir=cache_dir, device="cpu",
                                   progress=False, mc_samples=0, projections=(),
                                   input_spec=spec_from_flags(None, "0", "1"))
    assert session.model.input_shape == (1, 8, 8)
    session.run()
    ds = session.dataset
    with torch.no_grad():
        logits = model(torch.as_tensor(ds.images).float() / 255.0)
    table = session.table()
    expected = (logits.argmax(1).numpy() == ds.labels)
    assert len(table) == 1797
    np.testing.assert_array_equal(table["correct"].to_numpy(bool), expected)
    assert expected.mean() > 0.8
    loss = F.cross_entropy(logits, torch.as_tensor(ds.labels), reduction="none").numpy()
    np.testing.assert_allclose(table["loss"].to_numpy(), loss, atol=1e-4)
