"""The speed patches of dentcae's Caffe build (scripts/build_caffe.py) change no result.

- Adam's CPU update (weight decay, seven vector passes of which one a scalar std::pow loop, weight
  update) runs as one fused OpenMP pass: a tiny real net is stepped with Caffe's solver and every
  weight compared with BVLC's update rules written out in numpy, from the gradients Caffe computes.
- Crop's CPU copy copies each row once instead of shape(-1) times: checked exactly against slicing.
"""
import h5py
import numpy as np
import pytest

from dentcae.runtime.backend import get_caffe, set_device

pytestmark = pytest.mark.slow

NET = """
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "{source}" batch_size: 6 }} }}
layer {{ name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
        inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.5 }}
                               bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }}
layer {{ name: "fc2" type: "InnerProduct" bottom: "fc1" top: "out"
        param {{ lr_mult: 2 decay_mult: 0 }} param {{ lr_mult: 1 decay_mult: 1 }}
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }}
"""
SOLVER = """net: "{net}" type: "{type}" base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 2
momentum: 0.9 momentum2: 0.999 delta: 1e-8 weight_decay: 0.01 max_iter: 100 random_seed: 3
snapshot_prefix: "{tmp}/s" solver_mode: CPU
"""
MULTS = {("fc1", 0): (1, 1), ("fc1", 1): (1, 1), ("fc2", 0): (2, 0), ("fc2", 1): (1, 1)}


def _solver(tmp_path, kind):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["data"] = rng.normal(size=(6, 4)).astype(np.float32)
        f["label"] = rng.normal(size=(6, 2)).astype(np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'd.h5'}\n")
    (tmp_path / "net.prototxt").write_text(NET.format(source=tmp_path / "list.txt"))
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(net=tmp_path / "net.prototxt", type=kind, tmp=tmp_path))
    set_device(None)
    return get_caffe().get_solver(str(tmp_path / "solver.prototxt"))


def _params(net):
    return {(name, i): b.data.copy() for name, blobs in net.params.items() for i, b in enumerate(blobs)}


def _gradients(net):
    net.forward()
    net.clear_param_diffs()
    net.backward()
    return {(name, i): b.diff.copy() for name, blobs in net.params.items() for i, b in enumerate(blobs)}


def _bvlc_step(kind, w, g, state, t):
    """BVLC's SGDSolver/AdamSolver CPU update for one blob: L2 decay, then the rule, then w -= diff."""
    rate = 0.05 * 0.5 ** (t // 2)
    for key in w:
        lr_mult, decay_mult = MULTS[key]
        diff = g[key] + 0.01 * decay_mult * w[key]
        if kind == "SGD":
            state[key] = 0.9 * state.get(key, 0) + rate * lr_mult * diff
            w[key] = w[key] - state[key]
            continue
        m, v = state.get(key, (0, 0))
        m = 0.1 * diff + 0.9 * m
        v = 0.001 * diff * diff + 0.999 * v
        state[key] = (m, v)
        correction = np.sqrt(1 - 0.999 ** (t + 1)) / (1 - 0.9 ** (t + 1))
        w[key] = w[key] - rate * lr_mult * correction * m / (np.sqrt(v) + 1e-8)


@pytest.mark.parametrize("kind", ["Adam", "SGD"])
def test_solver_steps_match_bvlc_update_rules(tmp_path, kind):
    solver = _solver(tmp_path, kind)
    w, state = {k: v.astype(np.float64) for k, v in _params(solver.net).items()}, {}
    for t in range(5):
        g = _gradients(solver.net)              # the batch is the whole file: the same every step
        _bvlc_step(kind, w, {k: v.astype(np.float64) for k, v in g.items()}, state, t)
        solver.step(1)
        got = _params(solver.net)
        for key in w:
            np.testing.assert_allclose(got[key], w[key], rtol=2e-5, atol=2e-6, err_msg=f"{key} at step {t + 1}")
        w = {k: v.astype(np.float64) for k, v in got.items()}   # follow Caffe's float32 weights


CROP_NET = """force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 11 } } }
layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop"
        crop_param { axis: 2 offset: 3 offset: 1 } }
"""


def test_crop_copies_exactly_the_window_forward_and_back(tmp_path):
    set_device(None)
    (tmp_path / "crop.prototxt").write_text(CROP_NET)
    caffe = get_caffe()
    net = caffe.Net(str(tmp_path / "crop.prototxt"), caffe.TEST)
    rng = np.random.default_rng(1)
    data = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    net.blobs["data"].data[...] = data
    net.forward()
    np.testing.assert_array_equal(net.blobs["crop"].data, data[:, :, 3:8, 1:8])
    top_diff = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
    net.blobs["crop"].diff[...] = top_diff
    net.backward()
    expected = np.zeros_like(data)
    expected[:, :, 3:8, 1:8] = top_diff
    np.testing.assert_array_equal(net.blobs["data"].diff, expected)
