"""The preprocessing check, on a user's MLP trained on raw [0, 1] pixels (``ToTensor()`` only).

The model is trained here by a hand-written loop on real digits; the expected
accuracy and loss come from a hand-written evaluation of the same samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.session import AnalysisSession
from core.datasets import load_dataset
from models.inputs import InputSpec, spec_from_flags


@pytest.fixture(scope="module")
def raw_mlp(tmp_path_factory, byo_factory, digits, data_root):
    """(weights file, test images, test labels) of an MLP trained on pixels / 255."""
    import sys

    from tests.conftest import BYO_DIR  # noqa: F401  (user_models lives beside byo_factory)

    if str(BYO_DIR) not in sys.path:
        sys.path.insert(0, str(BYO_DIR))
    import user_models

    train = load_dataset(digits, "train", data_root=data_root, limit=10000)
    torch.manual_seed(0)
    model = user_models.mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.as_tensor(train.images).float() / 255.0  # transforms.ToTensor(), nothing else
    y = torch.as_tensor(train.labels)
    for _ in range(5):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("user") / "mlp.pt"
    torch.save(model.state_dict(), path)
    test = load_dataset(digits, "test", data_root=data_root, limit=600)
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(test.images).float() / 255.0)
    loss = F.cross_entropy(logits, torch.as_tensor(test.labels), reduction="none").numpy()
    acc = float((logits.argmax(1).numpy() == test.labels).mean())
    return path, acc, loss


def open_mlp(raw_mlp, digits, data_root, cache_dir, spec: InputSpec | None = None):
    return AnalysisSession.open(None, digits, "test", model_spec="user_models:mlp",
                                weights=raw_mlp[0], data_root=data_root, cache_dir=cache_dir,
                                device="cpu", limit=600, mc_samples=0, projections=(),
                                progress=False, input_spec=spec)


def test_undeclared_raw_inputs_are_caught_and_the_flags_named(raw_mlp, digits, data_root,
                                                              cache_dir):
    session = open_mlp(raw_mlp, digits, data_root, cache_dir)
    assert any("assumed MNIST mean/std" in n for n in session.input_notes)
    check = session.preprocessing()
    by_name = {r["name"]: r for r in check["results"]}
    assert check["best"] == "raw [0, 1]"
    declared = check["results"][0]
    assert by_name["raw [0, 1]"]["accuracy"] >= declared["accuracy"]
    assert by_name["raw [0, 1]"]["loss"] < 0.8 * declared["loss"]
    assert "--mean 0 --std 1" in check["warning"]
    assert f"{check['results'][0]['accuracy']:.1%}" in check["warning"]


def test_declared_raw_inputs_match_a_hand_written_evaluation(raw_mlp, digits, data_root,
                                                             cache_dir):
    _, acc, loss = raw_mlp
    session = open_mlp(raw_mlp, digits, data_root, cache_dir, spec_from_flags(None, "0", "1"))
    session.run()
    assert session.preprocessing()["warning"] == ""
    assert not any("normalisation" in n for n in session.input_notes)
    table = session.table()
    assert table["correct"].mean() == acc
    np.testing.assert_allclose(table["loss"].to_numpy(), loss, atol=1e-4)


def test_the_check_is_keyed_by_the_normalisation(raw_mlp, digits, data_root, cache_dir):
    a = open_mlp(raw_mlp, digits, data_root, cache_dir)
    b = open_mlp(raw_mlp, digits, data_root, cache_dir, spec_from_flags(None, "0", "1"))
    assert a.engine.key("preprocessing_check") != b.engine.key("preprocessing_check")
    assert a.engine.key("inference") != b.engine.key("inference")
