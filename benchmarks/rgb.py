"""``python -m analysis bench --suite rgb``: Loupe on colour images it has never seen.

The data are real photographs: random 32x32 patches cut from the colour
photographs bundled with scikit-image (:data:`PHOTOS`; label = source photo).
Train patches come from the left half of each photo and test patches from the
right half, so no test pixel is in the training set. They are written as PNG
files in ``train/<photo>/`` and ``test/<photo>/`` (``folder:PATH`` with
``--split``). A small CNN with functional dropout
(:func:`benchmarks.rgb_models.small_rgb_cnn`) is trained by its own short
loop, as a user does, and saved as a state_dict. Then ``analysis run`` (all
steps: MC dropout T=20, UMAP and t-SNE) runs in fresh processes with
``--model``/``--weights``/``--input-size 3x32x32 --mean --std``: with an empty
artifact cache and an empty numba cache, with an empty artifact cache and the
numba cache that run left (the usual first run), and fully cached.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.child import CHILD, run_child

#: RGB photographs bundled with scikit-image (no download). ``cat`` is ``chelsea``
#: again and ``colorwheel``/``logo`` are drawings, so they are left out.
PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
          "retina", "rocket", "stereo_motorcycle")
PATCH = 32
MODEL_SPEC = "benchmarks.rgb_models:small_rgb_cnn"
STEP_LINE = re.compile(r"^ {4}(\S+)\s+(\S+)\s+([\d.]+) s$")  # "    umap  computed  8.99 s"


def load_photo(name: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of one of scikit-image's bundled photographs."""
    from skimage import data

    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    return np.ascontiguousarray(image[:, :, :3])


def photo_patches(half: str, per_photo: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(P * per_photo, 32, 32, 3)`` uint8 patches and their ``(P * per_photo,)`` labels.

    ``half`` is ``"left"`` or ``"right"``: where in each photo the patches lie.
    """
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = load_photo(name)
        h, w = photo.shape[:2]
        x0, x1 = (0, w // 2 - PATCH) if half == "left" else (w // 2, w - PATCH)
        ys = rng.integers(0, h - PATCH + 1, per_photo)
        xs = rng.integers(x0, x1 + 1, per_photo)
        patches += [photo[y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs, strict=True)]
        labels += [label] * per_photo
    return np.stack(patches), np.array(labels, dtype=np.int64)


def write_split(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """``root/<photo>/<index:05d>.png`` for every ``(N, 32, 32, 3)`` image."""
    from PIL import Image

    for name in PHOTOS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / PHOTOS[label] / f"{index:05d}.png")


def build_photo_folder(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Write ``root/train`` and ``root/test``; return the train arrays and the test labels.

    Sizes are rounded down to a multiple of ``len(PHOTOS)`` (balanced classes).
    """
    per_class = len(PHOTOS)
    x_train, y_train = photo_patches("left", max(1, n_train // per_class), seed)
    x_test, y_test = photo_patches("right", max(1, n_test // per_class), seed + 1)
    write_split(root / "train", x_train, y_train)
    write_split(root / "test", x_test, y_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def channel_stats(images: np.ndarray) -> tuple[str, str]:
    """Per-channel mean and std of ``(N, H, W, 3)`` uint8 pixels in [0, 1], as flag values."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return (",".join(f"{v:.3f}" for v in x.mean(0)), ",".join(f"{v:.3f}" for v in x.std(0)))


def to_input(images: np.ndarray, mean: str, std: str) -> torch.Tensor:
    """``ToTensor()`` then ``Normalize(mean, std)``: ``(N, 3, 32, 32)`` float32."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor([float(v) for v in mean.split(",")]).view(1, 3, 1, 1)
    s = torch.tensor([float(v) for v in std.split(",")]).view(1, 3, 1, 1)
    return (x - m) / s


def train_small_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0):
    """The user's own loop: Adam, batches of 64, ``epochs`` passes. Returns the model in eval."""
    from benchmarks.rgb_models import small_rgb_cnn

    torch.manual_seed(seed)
    model = small_rgb_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    return model.eval()


def parse_run_output(stdout: str) -> dict:
    """Accuracy, MC accuracy and per-step seconds from ``analysis run``'s summary."""
    out: dict = {"steps": {}}
    for line in stdout.splitlines():
        if m := re.match(r"^\s+accuracy ([\d.]+)", line):
            out["accuracy"] = float(m.group(1))
        elif m := re.match(r"^\s+MC dropout \(T=\d+\) accuracy ([\d.]+)", line):
            out["mc_accuracy"] = float(m.group(1))
        elif m := STEP_LINE.match(line):
            out["steps"][m.group(1)] = {"status": m.group(2), "seconds": float(m.group(3))}
        elif m := re.match(r"^\s+total ([\d.]+) s", line):
            out["total_s"] = float(m.group(1))
    return out


def rgb_bench(work: Path, n_test: int = 10_000, n_train: int = 10_000, epochs: int = 3,
              device: str = "cpu", projections: tuple[str, ...] = ("umap", "tsne"),
              mc_samples: int = 20, first_ever: bool = True) -> dict:
    """Build the photo-patch folder, train the CNN, time ``analysis run`` three ways.

    Returns a JSON-ready dict: sizes, data/training seconds, hand-written test
    accuracy, and ``end_to_end`` rows (``wall_s``, ``peak_rss_mb``, ``accuracy``,
    per-step ``steps``) for ``first_ever`` (unless ``first_ever=False``: without
    UMAP it is the empty-cache run again), ``empty_cache`` and ``cached``.
    """
    root = work / "rgb-photos"
    t = time.perf_counter()
    arrays = build_photo_folder(root, n_train, n_test)
    write_s = time.perf_counter() - t
    mean, std = channel_stats(arrays["x_train"])
    t = time.perf_counter()
    model = train_small_cnn(to_input(arrays["x_train"], mean, std),
                            torch.as_tensor(arrays["y_train"]), epochs)
    train_s = time.perf_counter() - t
    weights = work / "small_rgb_cnn.pt"
    torch.save(model.state_dict(), weights)
    with torch.no_grad():
        pred = model(to_input(arrays["x_test"], mean, std)).argmax(1).numpy()
    hand_acc = float((pred == arrays["y_test"]).mean())

    argv = ["run", "--model", MODEL_SPEC, "--weights", str(weights), "--dataset",
            f"folder:{root}", "--split", "test", "--input-size", f"3x{PATCH}x{PATCH}",
            "--mean", mean, "--std", std, "--mc-samples", str(mc_samples), "--device", device,
            "--projection", *projections]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba-rgb")}
    rows = {}
    modes = (("first_ever", "rgb-c1"),) if first_ever else ()
    for key, cache in (*modes, ("empty_cache", "rgb-c2"), ("cached", "rgb-c2")):
        row = run_child(CHILD.format(argv=argv + ["--cache-dir", str(work / cache)]), [], env,
                     keep_stdout=True)
        if row["rc"] != 0:
            raise RuntimeError(f"analysis run exited {row['rc']}:\n{row['stdout'][-3000:]}")
        row.update(parse_run_output(row.pop("stdout")))
        rows[key] = row
    return {"n_test": len(arrays["y_test"]), "n_train": len(arrays["y_train"]),
            "photos": list(PHOTOS), "mean": mean, "std": std, "epochs": epochs,
            "device": device, "projections": list(projections), "mc_samples": mc_samples,
            "write_pngs_s": write_s, "train_s": train_s, "hand_accuracy": hand_acc,
            "end_to_end": rows}


def format_rgb(r: dict) -> str:
    """The RGB rows of the bench report, with the empty-cache run's step times."""
    n = r["n_test"]
    label = f"RGB 32x32 ({n:,d} skimage photo patches, small CNN), all steps"
    maps = " + ".join(p.upper() if p == "umap" else "t-SNE" for p in r["projections"])
    lines = [
        f"RGB 32x32: random 32x32 patches of {len(r['photos'])} colour photographs bundled "
        f"with scikit-image ({', '.join(r['photos'])}); label = source photo; "
        f"{r['n_train']:,d} train patches from the photos' left halves, {n:,d} test patches "
        f"from their right halves, as PNG files (written in {r['write_pngs_s']:.1f} s).",
        f"small CNN (benchmarks.rgb_models:small_rgb_cnn, functional dropout) trained "
        f"{r['epochs']} epochs in {r['train_s']:.1f} s; --mean {r['mean']} --std {r['std']}",
        f"analysis run --dataset folder:... --split test, all steps (MC T={r['mc_samples']}, "
        f"{maps}), fresh process:",
    ]
    for text, key in (("first run ever (numba compiles)", "first_ever"),
                      ("empty artifact cache", "empty_cache"), ("everything cached", "cached")):
        if key not in r["end_to_end"]:
            continue
        row = r["end_to_end"][key]
        lines.append(f"  {label}, {text:32s} {row['wall_s']:7.2f} s wall   "
                     f"peak RSS {row['peak_rss_mb']:7.0f} MB")
    empty = r["end_to_end"]["empty_cache"]
    lines.append(f"  accuracy {empty.get('accuracy', float('nan')):.4f} (hand-written "
                 f"evaluation {r['hand_accuracy']:.4f}), MC dropout accuracy "
                 f"{empty.get('mc_accuracy', float('nan')):.4f}")
    lines.append("  steps of the empty-cache run: " + ", ".join(
        f"{name} {s['seconds']:.2f} s" for name, s in empty["steps"].items()))
    return "\n".join(lines)
