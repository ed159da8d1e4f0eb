"""Ensemble teachers with test-time views label the unlabelled training images, the filters keep what
their rules say, a student starts from every layer of a run with its copied layers learning slower,
and a pseudo-labelled landmark that was not kept gets no gradient in the refine net either."""
import csv
import json

import numpy as np
import pytest

from conftest import tiny
from dentcae.data.dataset import load_dataset
from dentcae.data.prepare import prepare
from dentcae.nets.transfer import read_caffemodel
from dentcae.runtime.backend import get_caffe
from dentcae.train.loop import train
from dentcae.train.runfiles import run_dir
from dentcae.unlabelled.pseudo_label import pseudo_label

pytestmark = pytest.mark.slow
REFINE = {"patch": 68, "fine_size": 136, "draws": 1, "max_iter": 3, "batch_size": 4, "loss": "all"}


def _teacher(tmp, root, name, seed=0, budget=4, refine=None, **over):
    return tiny(tmp, root, name=name, seed=seed, prepare={"input_size": 96, "resize": "pad"},
                dataset={"label_budget": budget},
                model={"head": "heatmap", "head_width": 16, "refine": refine or {"patch": 0}, **over.pop("model", {})},
                solver={"max_iter": 4, "batch_size": 4, "random_seed": seed}, **over)


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_an_ensemble_with_views_labels_and_the_filters_keep_what_their_rules_say(phantom, clean_tmp, quiet):
    cfgs = [_teacher(clean_tmp, phantom, f"t{s}", seed=s) for s in (0, 1)]
    for c in cfgs:
        train(c, log=quiet)
    settings = {"filters": ["spread", "shape"], "spread_keep": 0.5, "shape_quantile": 0.9,
                "views": [{"shift": [3, 0]}, {"scale": 1.05}]}
    report = pseudo_label([run_dir(c) for c in cfgs], clean_tmp / "pseudo", settings, progress=False)
    prep = prepare(cfgs[0])
    test = {s["image"] for s in prep.samples() if int(s["reg_test"])}
    labelled = {s["image"] for s in prep.samples() if int(s["reg_train"])}
    table = _csv(clean_tmp / "pseudo" / "pseudo_labels.csv")
    candidates = sorted({r["image"] for r in table})
    assert candidates == report["candidates"] and not set(candidates) & (test | labelled)
    assert len(table) == 8 * len(candidates) and report["settings"]["filters"] == ["spread", "shape"]
    spread = np.array([float(r["spread_mm"]) for r in table]).reshape(-1, 8)
    resid = np.array([float(r["shape_residual_mm"]) for r in table]).reshape(-1, 8)
    kept = np.array([int(r["kept"]) for r in table], bool).reshape(-1, 8)
    assert np.isfinite(spread).all() and (spread > 0).all()        # 2 teachers x 3 views disagree a little
    t = report["thresholds"]                          # (the CSV holds 3 decimals: half a unit of slack)
    rule = (spread <= np.array(t["spread_mm"]) + 5e-4) & (resid <= np.array(t["shape_mm"]) + 5e-4)
    x = np.array([float(r["x"]) for r in table]).reshape(-1, 8)
    assert np.array_equal(kept, rule & np.isfinite(x))            # the phantom's guesses all lie on the image
    assert ((spread <= np.array(t["spread_mm"]) + 5e-4).sum(0) >= len(candidates) // 2).all()
    rows = {r["image"]: r for r in _csv(clean_tmp / "pseudo" / "landmarks.csv")}
    for i, name in enumerate(candidates):                          # the dataset holds exactly the kept ones
        assert [rows[name][f"x{k + 1}"] != "" for k in range(8)] == kept[i].tolist()
    annotated = {r.name for r in load_dataset(phantom).images if r.annotated}
    assert report["accuracy_on_withheld_labels"]["images"] == len(set(candidates) & annotated) > 0
    assert set(report["filter_curves_on_withheld_labels"]) == {"confidence", "spread", "shape residual"}
    assert (clean_tmp / "pseudo" / "filter_curves.svg").stat().st_size > 0
    assert len(load_dataset(clean_tmp / "pseudo").images) == sum(report["images"].values())   # no stray image
    assert len(report["teachers_weights_sha256"]) == 2


def test_teachers_trained_on_other_labels_are_refused(phantom, clean_tmp, quiet):
    a, b = _teacher(clean_tmp, phantom, "a", budget=3), _teacher(clean_tmp, phantom, "b", budget=4)
    for c in (a, b):
        train(c, log=quiet)
    with pytest.raises(ValueError, match="other labelled or test images"):
        pseudo_label([run_dir(a), run_dir(b)], clean_tmp / "pseudo", {"filters": ["spread"]}, progress=False)
    assert not (clean_tmp / "pseudo").exists()


def test_a_run_start_copies_every_layer_of_both_nets_and_copied_layers_learn_slower(phantom, clean_tmp, quiet):
    teacher = _teacher(clean_tmp, phantom, "teacher", refine=REFINE)
    train(teacher, log=quiet)
    student = _teacher(clean_tmp, phantom, "student", refine=REFINE, train={"save_init": True},
                       model={"init": "run", "init_run": str(run_dir(teacher)), "copied_lr_mult": 0.1,
                              "head_lr_mult": 10.0})
    train(student, log=quiet)
    for sub in ("", "refine"):
        src, dst = run_dir(teacher) / sub, run_dir(student) / sub
        report = json.loads((dst / "transfer.json").read_text())
        assert report["source"] == str(src / "final.caffemodel") and report["fresh"] == []
        start, final = read_caffemodel(dst / "init.caffemodel") if sub == "" else None, read_caffemodel(src / "final.caffemodel")
        if start is not None:
            assert start.keys() == final.keys() and all(np.array_equal(a, b) for k in final
                                                        for a, b in zip(start[k], final[k]))
        text = (dst / "train.prototxt").read_text()
        net = get_caffe().proto.caffe_pb2.NetParameter()
        from google.protobuf import text_format
        text_format.Merge(text, net)
        mults = {l.name: l.param[0].lr_mult for l in net.layer if len(l.param)}
        assert mults["conv1"] == pytest.approx(0.1) and mults["heatmaps"] == pytest.approx(1.0)   # 10 x 0.1


def test_copied_lr_mult_touches_only_the_copied_layers(phantom, clean_tmp):
    from dentcae.train.stages import nets_for
    cfg = _teacher(clean_tmp, phantom, "cae_start", model={"init": "cae", "copy_layers": ["conv1", "conv2"],
                                                           "copied_lr_mult": 0.25})
    train_net, deploy = nets_for(cfg, 8, ("a.txt", "b.txt"))
    mults = {l.name: l.param[0].lr_mult for l in train_net.layer if len(l.param)}
    assert mults["conv1"] == mults["conv2"] == pytest.approx(0.25) and mults["conv3"] == pytest.approx(1.0)


def test_a_landmark_left_out_of_the_pseudo_labels_gets_no_gradient_in_the_refine_net(phantom, clean_tmp, quiet):
    teacher = _teacher(clean_tmp, phantom, "teacher", budget=3)
    train(teacher, log=quiet)
    pseudo_label(run_dir(teacher), clean_tmp / "pseudo", {"min_confidence": 0.0}, progress=False)
    path = clean_tmp / "pseudo" / "landmarks.csv"
    rows = _csv(path)
    for r in rows:                                    # the teacher left landmark 2 out of every pseudo-label
        if r["split"] == "train" and r["image"] in json.loads((clean_tmp / "pseudo" / "pseudo.json").read_text())["candidates"]:
            r["x2"] = r["y2"] = ""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    student = _teacher(clean_tmp, clean_tmp / "pseudo", "student", budget=None, refine=REFINE,
                       model={"partial_labels": True})
    train(student, log=quiet)
    caffe = get_caffe()
    net = caffe.Net(str(run_dir(student) / "refine" / "train.prototxt"), caffe.TRAIN)
    masked = 0
    for _ in range(3):
        net.forward()
        net.backward()
        mask, grad = net.blobs["heatmap_mask"].data, net.blobs["heatmaps"].diff
        assert np.all(grad[mask == 0] == 0) and all(np.abs(g).max() > 0 for g in grad[mask == 1])
        masked += int((mask[:, 1] == 0).sum())
    assert masked > 0                                  # the unlabelled landmark 2 is masked somewhere
