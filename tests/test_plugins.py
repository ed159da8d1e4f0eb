"""The plug-in registries: every head and pre-training has every hook, and a head defined here, in
this test module alone, is validated, trained, evaluated and written out with no other file changed."""
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import tiny
from dentcae.config import ConfigError, load_config
from dentcae.registry import HEAD_HOOKS, HEADS, PRETEXT_HOOKS, PRETEXTS, TRAINABLE, Registry, stage_plugin


def _hooks(kind):
    return kind["required"] + tuple(kind["optional"])


def test_every_registered_head_and_pretext_has_every_hook():
    assert {"heatmap", "regression"} <= set(HEADS.names()) and {"cae", "augment"} <= set(PRETEXTS.names())
    for registry, hooks in ((HEADS, HEAD_HOOKS), (PRETEXTS, PRETEXT_HOOKS)):
        for name in registry.names():
            plugin = registry.get(name)
            assert registry.missing_hooks(plugin._obj) == [], name       # the module itself has the required ones
            for hook in _hooks(hooks):
                assert hasattr(plugin, hook), (name, hook)
            assert callable(plugin.build) and isinstance(plugin.STEM, str)
    for name in HEADS.names():
        for sub, plugin in HEADS.get(name).SUBRUNS.items():
            assert all(hasattr(plugin, h) for h in TRAINABLE["required"]), (name, sub)


def test_configs_name_plugins_through_the_registries(phantom, tmp_path):
    cfg = tiny(tmp_path, phantom, model={"head": "heatmap", "refine": {"patch": 96}})
    assert stage_plugin(cfg) is HEADS.get("heatmap")
    assert stage_plugin({**cfg, "stage": "refine"}).input_size(cfg) == 96       # the heatmap head's sub-run
    assert stage_plugin(tiny(tmp_path, phantom, stage="pretrain", model={"pretext": "augment"})) is PRETEXTS.get("augment")
    for bad, message in (({"head": "nope"}, r"model.head' must be one of \('heatmap', 'regression'"),
                         ({"init": "pretext"}, "'pretext' is now named after the pre-training: use 'augment'"),
                         ({"init": "nope"}, r"model.init' must be one of \('scratch', 'imagenet', 'run', 'augment', 'cae'")):
        with pytest.raises(ConfigError, match=message):
            tiny(tmp_path, phantom, model=bad)
    with pytest.raises(ConfigError, match="'stage' must be one of"):
        tiny(tmp_path, phantom, stage="refine")                # the regression head has no sub-run
    with pytest.raises(KeyError, match="no head named 'nope'"):
        HEADS.get("nope")


def test_a_plugin_without_a_required_hook_is_refused():
    registry = Registry("heads", HEAD_HOOKS)
    with pytest.raises(TypeError, match="lacks the hooks decode"):
        registry.register("half", SimpleNamespace(STEM="half", build=None, outputs=None, targets=None))


def _toy_head():
    """A head of its own: AlexNet conv1-pool5, one fully connected layer `fc_toy_landmarks` to the
    2K coordinates, a Euclidean loss; decoding is a reshape. Keys of its own: model.toy_std."""
    from dentcae.nets.alexnet import convs, finish, inputs
    from dentcae.runtime.backend import get_caffe

    def build(k, model, size=224, train=None, batch=16, test_batch=16, deploy=False, freeze=()):
        caffe = get_caffe()
        n = caffe.NetSpec()
        test = inputs(n, size, deploy, train, batch, test_batch)
        n.fc_toy_landmarks = caffe.layers.InnerProduct(convs(n, set(freeze)), num_output=2 * k,
                                                       weight_filler=dict(type="gaussian", std=model["toy_std"]))
        if not deploy:
            n.loss = caffe.layers.EuclideanLoss(n.fc_toy_landmarks, n.label)
        return finish(n, test, "toy")

    return SimpleNamespace(STEM="toy", CONFIG={"toy_std": 0.001}, build=build, outputs=lambda k: (2 * k, "values"),
                           targets=lambda cfg: (None, {}),
                           decode=lambda outputs, size, labels: np.asarray(outputs, float).reshape(len(outputs), -1, 2))


@pytest.fixture
def toy_head():
    HEADS.register("toy", _toy_head())
    yield HEADS.get("toy")
    HEADS.unregister("toy")


@pytest.mark.slow
def test_a_toy_head_registered_here_trains_and_evaluates(phantom, clean_tmp, quiet, toy_head):
    from dentcae.evaluation.evaluate import evaluate_checkpoint
    from dentcae.train.loop import train
    from dentcae.train.runfiles import run_dir
    from dentcae.train.stages import write_config_prototxts
    cfg = tiny(clean_tmp, phantom, name="toy", model={"head": "toy", "toy_std": 0.002})
    assert "toy_std" in load_config(clean_tmp / "toy.yaml")["model"]        # its key joined the schema
    summary = train(cfg, log=quiet)
    run = run_dir(cfg)
    assert summary["iterations"] == 4 and (run / "snapshots").is_dir() and (run / "final.caffemodel").exists()
    assert "fc_toy_landmarks" in (run / "deploy.prototxt").read_text() and "std: 0.002" in (run / "train.prototxt").read_text()
    got = evaluate_checkpoint(None, run)
    assert np.isfinite(got["mre_mm"]) and got["n_samples"] > 0 and "baseline_mean_shape_mre_mm" in got
    assert (run / "predictions.csv").exists() and (run / "summary.json").exists()
    written = write_config_prototxts(cfg, clean_tmp / "prototxt", num_landmarks=4)
    assert [p.name for p in written] == ["alexnet_toy_train.prototxt", "alexnet_toy_deploy.prototxt", "toy_solver.prototxt"]
