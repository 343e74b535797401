"""analysis/executor.py: the Ray Data executor gives the in-process results, in sample order.

A local Ray with 2 CPUs is started once for the module and shut down after it.
The data are a 2,000-sample slice of real MNIST training digits (``mnist`` under
LOUPE_DATA, else the embedded ``mnist-5k``); the model is the tiny run trained
on real digits (``tiny_model``).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from analysis.cli import build_parser
from analysis.engine import Engine
from analysis.executor import (
    BatchJob,
    InProcessExecutor,
    RayExecutor,
    batch_ranges,
    dumps_job,
    make_executor,
)
from analysis.steps import image_metadata
from cache import ArtifactStore
from core.datasets import load_dataset
from core.errors import ConfigError

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]'); "
                                        "the Ray executor cannot be tested")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")

CPU = torch.device("cpu")
STEPS = ("inference", "mc_dropout", "image_metadata", "attribution")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for this module; shut down (its processes stopped) after."""
    import cloudpickle

    # The workers cannot import this test module: its jobs travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def slice2000(digits, data_root):
    return load_dataset(digits, "train", data_root=data_root, limit=2000)


def index_batches(_model, arrays, _device, scale: int = 1):
    """A job whose output is a function of the sample index alone (order check)."""
    def fn(start, stop):
        idx = np.arange(start, stop)
        return {"twice": idx * scale, "image_sum": arrays["image"][start:stop].sum((1, 2, 3))}
    return fn


@pytest.fixture(scope="module")
def both(local_ray, tiny_model, slice2000, tmp_path_factory):
    """Every batch step on the slice, in-process and on Ray (2 task workers); several
    batches each (MC and metadata batches made small for it); heatmaps of the 40
    highest-loss misclassified samples."""
    options = {"mc_dropout": {"samples": 4, "batch_size": 256},
               "inference": {"batch_size": 300},
               "attribution": {"limit": 40, "n_steps": 8}}  # 3 batches of heatmaps
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_metadata, "METADATA_BATCH", 450)
        for name, executor in (("inprocess", InProcessExecutor()), ("ray", RayExecutor())):
            engine = Engine(tiny_model, slice2000, ArtifactStore(tmp_path_factory.mktemp(name)),
                            CPU, options, progress=False, executor=executor)
            out[name] = (engine, {step: engine.get(step) for step in STEPS})
    return out


@pytest.mark.parametrize("step", STEPS)
def test_ray_equals_in_process(both, step):
    local, remote = both["inprocess"][1][step], both["ray"][1][step]
    assert set(local) == set(remote) and len(local) > 0
    for key in local:
        assert remote[key].shape == local[key].shape and remote[key].dtype == local[key].dtype, key
        np.testing.assert_allclose(remote[key], local[key], rtol=1e-5, atol=1e-6,
                                   equal_nan=True, err_msg=f"{step}: {key}")
    assert remote.summary == local.summary


def test_ray_workers_keep_the_trunk_and_mc_dropout_reads_it(both):
    ray_results = both["ray"][1]
    assert ray_results["inference"].summary["trunk_shapes"] == [[128]]
    assert ray_results["inference"]["trunk:0"].shape == (2000, 128)
    assert ray_results["mc_dropout"].summary["trunk_kept"] is True


def test_same_cache_key_on_either_executor(both):
    for step in STEPS:
        assert both["inprocess"][0].key(step) == both["ray"][0].key(step)


def test_ray_results_are_in_sample_order(both, tiny_model, slice2000):
    # Evaluated here by hand: the logits of a few samples from a forward pass of those
    # images alone, and the brightness as the mean pixel of each image.
    art = both["ray"][1]
    picks = [0, 17, 299, 300, 1234, 1999]  # batch edges (300 a batch) and inside
    with torch.inference_mode():
        x = tiny_model.prepare(torch.as_tensor(slice2000.images[picks]))
        expected = tiny_model.module.cpu().eval()(x).numpy()
    np.testing.assert_allclose(art["inference"]["logits@class"][picks], expected, rtol=1e-4,
                               atol=1e-5)
    brightness = slice2000.images.reshape(len(slice2000), -1).mean(1) / 255.0
    np.testing.assert_allclose(art["image_metadata"]["brightness"], brightness, rtol=1e-5)
    # MC predictions mostly agree with the plain ones sample by sample (a shuffle would
    # leave about 10% agreeing; the tiny model at T=4 agrees on about 85%).
    assert (art["mc_dropout"]["pred@class"] == art["inference"]["pred@class"]).mean() > 0.7


def test_order_of_many_small_batches(local_ray, slice2000):
    images = slice2000.images[:997]
    job = BatchJob(index_batches, {"image": images}, options={"scale": 2})
    out = RayExecutor(workers=2).map_batches(job, 997, 50, device=CPU)
    np.testing.assert_array_equal(out["twice"], np.arange(997) * 2)
    np.testing.assert_array_equal(out["image_sum"], images.reshape(997, -1).sum(1))
    local = InProcessExecutor().map_batches(job, 997, 50, device=CPU)
    assert local.keys() == out.keys()


def test_actor_pool_path_equals_in_process(local_ray, tiny_model, slice2000):
    """The callable class on a Ray Data actor pool (the path taken with GPUs)."""
    from analysis.forward import model_arrays
    from analysis.steps.mc_dropout import mc_batches

    n = 600  # the first 600 samples of the slice, in 5 batches
    job = BatchJob(mc_batches, model_arrays(tiny_model, slice2000), tiny_model,
                   {"samples": 3, "seed": 7})
    remote = RayExecutor(actors=True, workers=2).map_batches(job, n, 128, device=CPU)
    local = InProcessExecutor().map_batches(job, n, 128, device=CPU)
    for key in local:
        np.testing.assert_allclose(remote[key], local[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_mc_dropout_does_not_depend_on_batch_order(tiny_model, slice2000):
    """Batches run back to front give the masks of the front-to-back run (per-batch seeds)."""
    from analysis.forward import model_arrays
    from analysis.steps.mc_dropout import mc_batches

    job = BatchJob(mc_batches, model_arrays(tiny_model, slice2000), tiny_model,
                   {"samples": 3, "seed": 1})
    ranges = batch_ranges(700, 256)
    fn = job.make(CPU)
    forward = [fn(s, e) for s, e in ranges]
    backward = [fn(s, e) for s, e in reversed(ranges)][::-1]
    for a, b in zip(forward, backward, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_job_pickles_with_a_task_cache(tiny_model, slice2000):
    import cloudpickle

    tiny_model.task.sample_metadata(slice2000)  # fills the task's weak-keyed cache
    job = BatchJob(index_batches, {}, tiny_model)
    back = cloudpickle.loads(dumps_job(job))
    assert back.model.task.head_names == tiny_model.task.head_names
    for (k, a), b in zip(tiny_model.module.state_dict().items(),
                         back.model.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_make_executor_and_flags():
    assert isinstance(make_executor(), InProcessExecutor)
    with pytest.raises(ConfigError, match="--executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="--ray-address 1.2.3.4:6379 needs --executor ray"):
        make_executor("inprocess", "1.2.3.4:6379")
    args = build_parser().parse_args(["run", "--executor", "ray", "--ray-address", "auto"])
    assert (args.executor, args.ray_address) == ("ray", "auto")
    assert build_parser().parse_args(["run"]).executor == "inprocess"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--executor", "dask"])


def test_unreachable_address_is_a_config_error_at_once():
    import socket
    import time

    from analysis.executor import _check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"--ray-address 127.0.0.1:{port}: nothing answers"):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - started < 6
    _check_reachable("auto")  # Ray's own forms are left to Ray
    _check_reachable("ray://head:10001")
