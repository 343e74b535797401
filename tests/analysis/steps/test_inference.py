"""analysis/steps/inference.py: one batched forward pass and its columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.engine import Engine
from cache import ArtifactStore
from core.datasets import load_dataset


def test_inference_matches_a_plain_forward_pass(tiny_session, tiny_model):
    art = tiny_session.artifact("inference")
    ds = tiny_session.dataset
    x = tiny_model.prepare(torch.from_numpy(ds.images))
    module = tiny_model.module.eval()
    with torch.no_grad():
        logits = module(x)
        emb = module[:-1](x)  # the input of the last Linear layer
    np.testing.assert_allclose(art["logits@class"], logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(art["embedding"], emb.numpy(), rtol=1e-4, atol=1e-4)
    assert art["embedding"].shape == (300, 64) and art.summary["embedding_dim"] == 64
    loss = F.cross_entropy(logits, torch.from_numpy(ds.labels), reduction="none")
    np.testing.assert_allclose(art["loss@class"], loss.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(art["pred@class"], art["probs@class"].argmax(1))
    np.testing.assert_allclose(art["probs@class"].sum(1), 1.0, atol=1e-5)
    assert art.summary["accuracy"] == pytest.approx((art["pred@class"] == ds.labels).mean())
    assert art.summary["accuracy"] > 0.5
    cols = tiny_session.engine.columns("inference")
    np.testing.assert_allclose(cols["uncertainty@class"], 1 - art["probs@class"].max(1), atol=1e-6)
    assert ((cols["margin@class"] >= 0) & (cols["margin@class"] <= 1)).all()


def test_batch_size_does_not_change_results(tiny_model, digits, data_root, tmp_path):
    ds = load_dataset(digits, "test", data_root=data_root, limit=70)
    a = Engine(tiny_model, ds, ArtifactStore(tmp_path / "a"), torch.device("cpu"),
               {"inference": {"batch_size": 1000}}, progress=False).get("inference")
    b = Engine(tiny_model, ds, ArtifactStore(tmp_path / "b"), torch.device("cpu"),
               {"inference": {"batch_size": 16}}, progress=False).get("inference")
    np.testing.assert_allclose(a["logits@class"], b["logits@class"], rtol=1e-5, atol=1e-5)


def test_embedding_layer_by_name(byo_factory, digits, data_root, tmp_path):
    from models.checkpoint import LoadedModel

    torch.manual_seed(0)
    module = byo_factory.small_net().eval()
    ds = load_dataset(digits, "test", data_root=data_root, limit=10)
    art = Engine(LoadedModel(module, "byo", embedding_layer="features"), ds,
                 ArtifactStore(tmp_path), torch.device("cpu"), progress=False).get("inference")
    assert art["embedding"].shape == (10, 16) and (art["embedding"] >= 0).all()  # after ReLU


def test_labels_the_model_cannot_output_get_nan_loss(digits, data_root, tmp_path):
    from models import zoo
    from models.checkpoint import LoadedModel

    model = LoadedModel(zoo.build("mnist_cnn", num_classes=5).eval(), "five")
    ds = load_dataset(digits, "test", data_root=data_root, limit=30)
    art = Engine(model, ds, ArtifactStore(tmp_path), torch.device("cpu"),
                 progress=False).get("inference")
    outside = ds.labels >= 5
    assert outside.any() and (~outside).any()
    loss = art["loss@class"]
    assert np.isnan(loss[outside]).all() and np.isfinite(loss[~outside]).all()
    assert art["probs@class"].shape == (30, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_model, digits, data_root, tmp_path):
    ds = load_dataset(digits, "test", data_root=data_root, limit=300)
    cpu = Engine(tiny_model, ds, ArtifactStore(tmp_path / "a"), torch.device("cpu"),
                 progress=False).get("inference")
    gpu = Engine(tiny_model, ds, ArtifactStore(tmp_path / "b"), torch.device("cuda"),
                 progress=False).get("inference")
    np.testing.assert_allclose(gpu["logits@class"], cpu["logits@class"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu["embedding"], cpu["embedding"], rtol=1e-3, atol=1e-3)
    assert (gpu["pred@class"] == cpu["pred@class"]).mean() > 0.99
    tiny_model.module.cpu()
