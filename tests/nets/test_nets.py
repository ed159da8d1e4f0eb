"""Generated AlexNet nets (the CAE, the regressor, the classifier) with BVLC shapes; solvers; weight
transfer by name; freezing; the committed prototxts."""
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, TEST_FC_WIDTH, run_cli, tiny, tiny_config
from dentcae.config import load_config
from dentcae.heads.regression import regressor
from dentcae.nets.alexnet import classifier, write_net
from dentcae.pretexts.cae import cae as cae_net
from dentcae.train.stages import nets_for
from dentcae.data.prepare import prepare
from dentcae.nets.solver import solver_param, write_solver
from dentcae.nets.transfer import TransferError, copy_layers

pytestmark = pytest.mark.slow

BVLC_PARAMS = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
               "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
               "fc7": (4096, 4096), "fc8": (1000, 4096)}


def _encoder_shapes(size):
    c1 = (size - 11) // 4 + 1
    return {"data": (3, size, size), "conv1": (96, c1, c1), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
            "pool2": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13),
            "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,)}


DECODER = {"fc8": (1000,), "dec_fc7": (4096,), "dec_fc6": (4096,), "dec_pool5": (9216,),
           "dec_pool5_map": (256, 6, 6), "dec_unpool5": (256, 13, 13), "dec_conv5": (384, 13, 13),
           "dec_conv4": (384, 13, 13), "dec_conv3": (256, 13, 13), "dec_unpool2": (256, 27, 27),
           "dec_conv2": (96, 27, 27), "dec_unpool1": (96, 55, 55), "dec_conv1": (3, 227, 227)}


def _net(caffe, tmp, spec, weights=None):
    path = write_net(spec, Path(tmp) / f"{spec.name}_{len(list(Path(tmp).iterdir()))}.prototxt")
    return caffe.Net(str(path), caffe.TEST) if weights is None else caffe.Net(str(path), str(weights), caffe.TEST)


@pytest.mark.parametrize("size", [224, 227])
def test_cae_blob_shapes_layer_by_layer(caffe, tmp_path, size):
    net = _net(caffe, tmp_path, cae_net(size=size, deploy=True))
    got = {k: v.data.shape[1:] for k, v in net.blobs.items()}
    for name, shape in {**_encoder_shapes(size), **DECODER}.items():
        assert got[name] == shape, name
    out = net.blobs[net.outputs[0]].data.shape
    assert out == (1, 3, size, size)                  # the reconstruction has the input's shape
    assert ("reconstruction" in net.blobs) == (size != 227)


def test_regressor_and_classifier_match_bvlc_alexnet(caffe, tmp_path):
    reg = _net(caffe, tmp_path, regressor(8, size=224, deploy=True))
    got = {k: v.data.shape[1:] for k, v in reg.blobs.items()}
    assert {k: got[k] for k in _encoder_shapes(224)} == _encoder_shapes(224)
    assert got["fc8_landmarks"] == (8,) and reg.outputs == ["fc8_landmarks"]
    cls = _net(caffe, tmp_path, classifier(size=227, deploy=True))
    assert {k: cls.params[k][0].data.shape for k in BVLC_PARAMS} == BVLC_PARAMS
    assert cls.blobs["prob"].data.shape == (1, 1000)
    layer_names = [l for l in cls._layer_names]
    for name in ["conv1", "relu1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv5", "pool5", "drop6", "drop7"]:
        assert name in layer_names


def test_train_variants_have_both_phases(caffe, phantom, tmp_path):
    prep = prepare(tiny(tmp_path, phantom))
    spec = regressor(8, train=(prep.source("reg_train"), prep.source("reg_test")), batch=2, test_batch=4,
                          width=TEST_FC_WIDTH)
    path = write_net(spec, tmp_path / "reg_train.prototxt")
    train, test = caffe.Net(str(path), caffe.TRAIN), caffe.Net(str(path), caffe.TEST)
    assert train.blobs["data"].data.shape[0] == 2 and test.blobs["data"].data.shape[0] == 4
    assert train.blobs["label"].data.shape == (2, 8)
    cae = write_net(cae_net(train=(prep.source("cae_train"), prep.source("cae_test")), batch=2,
                                  width=TEST_FC_WIDTH), tmp_path / "cae_train.prototxt")
    assert caffe.Net(str(cae), caffe.TRAIN).blobs["loss"].data.shape == ()


def test_imagenet_style_weights_copy_by_name(caffe, tmp_path):
    w = TEST_FC_WIDTH       # narrow fc6/fc7 throughout: the copy goes by name and checks every shape
    cls = _net(caffe, tmp_path, classifier(size=227, deploy=True, width=w))
    rng = np.random.default_rng(0)
    for blobs in cls.params.values():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.data.shape).astype(np.float32)
    cls.save(str(tmp_path / "alexnet.caffemodel"))
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    for target in (regressor(8, size=227, deploy=True, width=w), cae_net(size=227, deploy=True, width=w)):
        net = _net(caffe, tmp_path, target)
        own = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
        report = copy_layers(net, tmp_path / "alexnet.caffemodel", layers)
        assert list(report["copied"]) == layers
        for name in layers:
            for a, b in zip(net.params[name], cls.params[name]):
                np.testing.assert_array_equal(a.data, b.data)
        for name in report["fresh"]:
            for a, b in zip(net.params[name], own[name]):
                np.testing.assert_array_equal(a.data, b)
        assert ("fc8_landmarks" in report["fresh"]) == ("fc8_landmarks" in net.params)


def test_transfer_errors_name_the_layer(caffe, tmp_path):
    w = TEST_FC_WIDTH
    reg8 = _net(caffe, tmp_path, regressor(8, size=227, deploy=True, width=w))
    reg8.save(str(tmp_path / "reg8.caffemodel"))
    reg6 = _net(caffe, tmp_path, regressor(6, size=227, deploy=True, width=w))
    with pytest.raises(TransferError, match=rf"layer 'fc8_landmarks' blob 0: shape \[8, {w}\] .* != \[6, {w}\]"):
        copy_layers(reg6, tmp_path / "reg8.caffemodel", ["fc8_landmarks"])
    with pytest.raises(TransferError, match=r"layer 'fc6' blob 0: shape \[64, 9216\] .* != \[4096, 9216\]"):
        copy_layers(_net(caffe, tmp_path, regressor(6, size=227, deploy=True)), tmp_path / "reg8.caffemodel", ["fc6"])
    with pytest.raises(TransferError, match=r"cannot copy layer 'dec_fc7': .* has no weights"):
        copy_layers(_net(caffe, tmp_path, cae_net(size=227, deploy=True, width=w)), tmp_path / "reg8.caffemodel", ["dec_fc7"])
    with pytest.raises(TransferError, match="weights file not found"):
        copy_layers(reg6, tmp_path / "nothing.caffemodel", ["conv1"])


def _solver(caffe, tmp_path, spec, cfg, name):
    net_path = write_net(spec, tmp_path / f"{name}.prototxt")
    sp = solver_param(cfg["solver"], net_path, tmp_path / name, test_iter=1)
    return caffe.get_solver(str(write_solver(sp, tmp_path / f"{name}_solver.prototxt")))


def test_one_step_of_cae_and_regressor(caffe, phantom, tmp_path):
    cfg = tiny(tmp_path, phantom)
    prep = prepare(cfg)
    cae_cfg = {**cfg, "stage": "pretrain"}
    cae = _solver(caffe, tmp_path, nets_for(cae_cfg, None, (prep.source("cae_train"), prep.source("cae_test")))[0],
                  cfg, "cae")
    reg = _solver(caffe, tmp_path, nets_for(cfg, 4, (prep.source("reg_train"), prep.source("reg_test")))[0],
                  cfg, "reg")
    assert cae.net.params["fc6"][0].data.shape == (TEST_FC_WIDTH, 9216)      # narrow test nets
    assert reg.net.blobs["fc8_landmarks"].data.shape == (2, 8)
    for solver in (cae, reg):
        before = solver.net.params["conv1"][0].data.copy()
        solver.step(1)
        assert solver.iter == 1 and np.isfinite(float(solver.net.blobs["loss"].data))
        assert not np.array_equal(before, solver.net.params["conv1"][0].data)


def test_frozen_layers_stay_bit_identical(caffe, phantom, tmp_path):
    cfg = tiny(tmp_path, phantom)
    prep = prepare(cfg)
    for solver_type in ("SGD", "Adam"):
        cfg["solver"]["type"] = solver_type
        cfg["solver"]["base_lr"] = 1e-3 if solver_type == "SGD" else 1e-4
        spec = regressor(8, train=(prep.source("reg_train"), prep.source("reg_test")), batch=2,
                              freeze=["conv1", "fc6"], width=TEST_FC_WIDTH)
        solver = _solver(caffe, tmp_path, spec, cfg, f"frozen_{solver_type}")
        before = {k: [b.data.copy() for b in v] for k, v in solver.net.params.items()}
        solver.step(3)
        for name, blobs in before.items():
            same = all(np.array_equal(a, b.data) for a, b in zip(blobs, solver.net.params[name]))
            assert same == (name in ("conv1", "fc6")), (solver_type, name)


def test_a_frozen_layer_the_net_does_not_have_is_refused_and_gentle_rates_are_written(caffe, tmp_path):
    """model.freeze naming no layer of the net (a typo) would train everything at full rate."""
    from dentcae.train.stages import TrainingError
    cfg = load_config(ROOT / "configs/ours/heatmap_cae.yaml", ["model.freeze=[conv1, conv_5]"])
    with pytest.raises(TrainingError, match=r"model.freeze names conv_5, not a layer of this net.*conv5"):
        nets_for(cfg, 19, ("a.txt", "b.txt"))
    cfg = load_config(ROOT / "configs/ours/heatmap_cae.yaml", ["model.freeze=[conv1]", "model.copied_lr_mult=0.1"])
    rates = {l.name: [p.lr_mult for p in l.param] for l in nets_for(cfg, 19, ("a.txt", "b.txt"))[0].layer if l.param}
    assert rates["conv1"] == [0, 0] and rates["conv5"] == pytest.approx([0.1, 0.2])
    assert rates["heatmaps"][0] == pytest.approx(cfg["model"]["head_lr_mult"])      # fresh: not scaled


def test_committed_prototxts_equal_the_generators(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_prototxts import generate
    fresh = {Path(p).name: Path(p).read_text() for p in generate(tmp_path)}
    committed = {p.name: p.read_text() for p in (ROOT / "prototxt/paper").iterdir()}
    assert fresh.keys() == committed.keys()
    for name in fresh:
        assert fresh[name] == committed[name], f"prototxt/paper/{name} is stale: run `make prototxt`"


def test_for_config_dispatches_on_stage_and_reads_k_from_the_dataset(caffe, phantom, tmp_path):
    """`dentcae prototxt` on a dataset with K != 4 landmarks per sample writes a 2K-output head."""
    root = tmp_path / "whole"
    root.mkdir()
    for f in phantom.iterdir():
        (root / f.name).symlink_to(f)
    (root / "dataset.yaml").unlink()
    meta = yaml.safe_load((phantom / "dataset.yaml").read_text())
    meta.pop("sides")
    meta["layout"] = "whole"                       # 8 landmarks per sample
    (root / "dataset.yaml").write_text(yaml.safe_dump(meta))
    code, out = run_cli("prototxt", "--config", str(tiny_config(tmp_path, root)), "--out", str(tmp_path / "p"))
    assert code == 0, out
    deploy = caffe.Net(str(tmp_path / "p/alexnet_landmarks_deploy.prototxt"), caffe.TEST)
    assert deploy.blobs["fc8_landmarks"].data.shape == (1, 16)
    cfg = load_config(tiny_config(tmp_path, root, stage="pretrain"))
    train, deploy = nets_for(cfg, None, ("a.txt", "b.txt"))
    assert train.name == deploy.name == "AlexNet_CAE"
    w = TEST_FC_WIDTH
    assert [(l.name, l.inner_product_param.num_output) for l in deploy.layer if l.type == "InnerProduct"] == \
        [("fc6", w), ("fc7", w), ("fc8", 1000), ("dec_fc7", w), ("dec_fc6", w), ("dec_pool5", 9216)]
