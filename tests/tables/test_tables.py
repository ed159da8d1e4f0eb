"""Table configs (tables/spec.py): `_base_`, sweeps, pre-trainings, schedule presets, and recognising
finished runs (tables/run.py)."""
import pytest
import yaml

from dentcae.config import ConfigError, dump_config, load_config
from dentcae.tables.spec import load_preset, load_table, resolve_run


def test_gpu_preset_scales_every_iteration_count_and_nothing_else():
    table = load_table("configs/ours/table3.yaml")
    table["preset"] = load_preset("gpu")
    assert table["preset"] == {"iterations_scale": 20}
    cpu, _ = resolve_run("configs/ours/heatmap_scratch.yaml", {**table, "preset": {}}, "heatmap_scratch", 0, [])
    gpu, _ = resolve_run("configs/ours/heatmap_scratch.yaml", table, "heatmap_scratch", 0, [])
    for key in ("max_iter", "stepsize", "snapshot", "test_interval"):
        assert gpu["solver"][key] == 20 * cpu["solver"][key]
    assert gpu["solver"]["batch_size"] == cpu["solver"]["batch_size"]
    assert gpu["model"]["refine"]["max_iter"] == 20 * cpu["model"]["refine"]["max_iter"] > 0
    gpu["model"]["refine"]["max_iter"] = cpu["model"]["refine"]["max_iter"]
    assert {k: v for k, v in gpu.items() if k != "solver"} == {k: v for k, v in cpu.items() if k != "solver"}


def test_a_bad_preset_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "fast.yaml"
    bad.write_text("iterations_scale: 0.5\n")
    with pytest.raises(ConfigError, match="fast.yaml: a preset holds one key, iterations_scale"):
        load_preset(str(bad))
    with pytest.raises(ConfigError, match="not found|No such|does not exist"):
        load_preset("no_such_preset")


def test_table3_names_its_pretrainings_and_their_arms():
    table = load_table("configs/isbi/table3.yaml")
    assert table["pretrainings"] == {"cae": "configs/paper/cae_pretrain.yaml",
                                     "augment": "configs/ours/augment_pretrain.yaml",
                                     "denoise": "configs/ours/denoise_pretrain.yaml"}
    inits = {a["key"]: load_config(a["config"])["model"]["init"] for a in table["arms"]}
    assert inits == {"regression_scratch": "scratch", "regression_cae": "cae", "heatmap_scratch": "scratch",
                     "heatmap_cae": "cae", "regression_augment": "augment", "heatmap_augment": "augment",
                     "heatmap_denoise": "denoise"}
    assert ["heatmap_cae", "heatmap_augment"] in table["comparisons"]
    assert ["heatmap_scratch", "heatmap_denoise"] in table["comparisons"]
    base = load_table("configs/ours/table3.yaml")          # the ISBI table is the same table on ISBI data
    assert {k: table[k] for k in ("arms", "comparisons", "pretrainings")} == \
        {k: base[k] for k in ("arms", "comparisons", "pretrainings")}
    assert table["name"] == "isbi_table3" and table["set"]["dataset.label_budget"] == 54


def test_table_bases_merge_and_sweeps_repeat_every_arm(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "name": "b", "set": {"solver.max_iter": 5}, "pretrainings": {"cae": "configs/paper/cae_pretrain.yaml"},
        "arms": [{"key": "s", "label": "scratch", "config": "configs/ours/regression_scratch.yaml"},
                 {"key": "c", "label": "CAE", "config": "configs/ours/regression_cae.yaml"}],
        "comparisons": [["s", "c"]]}))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "_base_": "base.yaml", "name": "t", "set": {"seed": 3},
        "sweep": {"key": "dataset.label_budget", "values": [10, 25]}}))
    t = load_table(tmp_path / "t.yaml")
    assert t["name"] == "t" and t["set"] == {"solver.max_iter": 5, "seed": 3}
    assert [a["key"] for a in t["arms"]] == ["s_10", "c_10", "s_25", "c_25"]
    assert t["comparisons"] == [["s_10", "c_10"], ["s_25", "c_25"]]
    cfg, _ = resolve_run(t["arms"][3]["config"], {**t, "preset": {}}, "c_25", 0, ["seed=1"], t["arms"][3]["set"])
    assert cfg["dataset"]["label_budget"] == 25 and cfg["solver"]["max_iter"] == 5 and cfg["seed"] == 0
    (tmp_path / "old.yaml").write_text("name: o\npretrain: configs/paper/cae_pretrain.yaml\narms: []\n")
    with pytest.raises(ConfigError, match="old.yaml: key 'pretrain' is now written pretrainings"):
        load_table(tmp_path / "old.yaml")


def test_a_run_saved_before_a_key_existed_is_still_recognised(tmp_path):
    from dentcae.tables.jobs import made_by as _made_by
    cfg = load_config("configs/ours/heatmap_scratch.yaml")
    run = tmp_path / "run"
    run.mkdir()
    dump_config(cfg, run / "config.yaml")
    assert _made_by(run, cfg)
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["model"]["pretext_methods"], old["model"]["pretrain_run"]      # keys at their defaults
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    assert _made_by(run, cfg)
    cfg["solver"]["max_iter"] += 1
    assert not _made_by(run, cfg)


@pytest.mark.slow
def test_gpus_flag_refuses_before_any_work_without_those_devices(tmp_path):
    from conftest import run_cli
    from dentcae.runtime.backend import cuda_devices, gpu_available
    if gpu_available() and len(cuda_devices()) >= 2:
        pytest.skip("this machine has two CUDA devices")
    code, out = run_cli("table", "configs/ours/table3.yaml", "--gpus", "0,1", "--out", str(tmp_path / "results"))
    assert code == 2 and ("CPU-only" in out or "does not exist" in out) and "Traceback" not in out
    assert not (tmp_path / "results").exists()
    code, out = run_cli("table", "configs/ours/table3.yaml", "--gpus", "0,x")
    assert code == 2 and "--gpus wants device numbers" in out


def _table(tmp_path, **over):
    t = {"name": "t", "set": {"runs_dir": str(tmp_path / "runs")},
         "arms": [{"key": "a", "label": "A", "config": "configs/ours/regression_scratch.yaml"},
                  {"key": "b", "label": "B", "config": "configs/ours/regression_scratch.yaml"}], **over}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(t))
    return path


@pytest.mark.parametrize("over, message", [
    ({"arms": [{"key": "a", "config": "configs/ours/regression_scratch.yaml"}] * 2}, "arm keys must be distinct"),
    ({"arms": [{"key": "../x", "config": "configs/ours/regression_scratch.yaml"}]}, r"arms\[0\].key' must be a plain folder name"),
    ({"comparisons": [["a"]]}, r"comparisons must be a list of \[arm, arm\] pairs"),
    ({"repeats": 0}, "repeats must be a whole number >= 1"),
    ({"pretrainings": {"cea": "configs/paper/cae_pretrain.yaml"}}, "'cea' is not a pre-training"),
])
def test_a_bad_table_spec_is_refused_on_load(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        load_table(_table(tmp_path, **over))
    assert not (tmp_path / "runs").exists() and not list(tmp_path.parent.glob("x.lock"))


def test_comparisons_may_be_null_and_presets_are_found_from_anywhere(tmp_path, monkeypatch):
    assert load_table(_table(tmp_path, comparisons=None))["comparisons"] == []
    monkeypatch.chdir(tmp_path)                                    # outside the checkout
    assert load_preset("gpu") == {"iterations_scale": 20}


def test_every_run_of_a_table_is_checked_before_any_trains(tmp_path):
    from conftest import ROOT, run_cli
    arms = [{"key": "ok", "config": str(ROOT / "configs/ours/regression_scratch.yaml")},
            {"key": "cae_as_arm", "config": str(ROOT / "configs/paper/cae_pretrain.yaml")}]
    code, out = run_cli("table", str(_table(tmp_path, arms=arms)))
    assert code == 2 and "arm cae_as_arm" in out and "is a 'pretrain' config" in out and "Traceback" not in out
    assert not (tmp_path / "runs").exists()
    arms = [{"key": "ok", "config": str(ROOT / "configs/ours/regression_cae.yaml")}]
    code, out = run_cli("table", str(_table(tmp_path, arms=arms)))
    assert code == 2 and "starts from 'cae' but the table's 'pretrainings' names no 'cae' config" in out
    pre = {"augment": str(ROOT / "configs/paper/cae_pretrain.yaml")}
    code, out = run_cli("table", str(_table(tmp_path, arms=arms, pretrainings=pre)))
    assert code == 2 and "not the pre-training 'augment'" in out
    for bad in ("-1", "0", "x"):
        code, out = run_cli("table", str(_table(tmp_path)), "--repeats", bad)
        assert code == 2 and "wants a whole number >= 1" in out and "Traceback" not in out
    assert not (tmp_path / "runs").exists()


def test_a_table_says_what_data_each_arm_saw_when_they_differ():
    from dentcae.tables.run import data_lines
    d = {"dataset": "isbi", "synthetic": False, "landmarks": ["a"], "labelled_train_images": 150,
         "label_budget": None, "test_images": 250, "test_samples": 250, "split": "reg_test",
         "pretrain_images": 150, "spacing_mm": [0.3], "input_size": 256, "leaks": {}}
    arms = {"all": {"label": "150 labels"}, "drop": {"label": "130 labels"}}
    same = data_lines(arms, {"all": d, "drop": dict(d)})
    assert same.startswith("Data: isbi (real X-rays)") and "\n" not in same
    two = data_lines(arms, {"all": d, "drop": {**d, "labelled_train_images": 130}})
    assert two.splitlines()[0].startswith("- 150 labels: Data:") and "trained on 130 labelled" in two.splitlines()[1]


def test_sweeps_name_null_all_narrow_to_a_set_value_and_keep_pseudo_label_teachers(tmp_path):
    arms = [{"key": "s", "label": "scratch", "config": "configs/ours/heatmap_scratch.yaml"},
            {"key": "c", "label": "CAE", "config": "configs/ours/heatmap_cae.yaml"},
            {"key": "p", "label": "pseudo", "config": "configs/ours/heatmap_pseudo.yaml", "pseudo_labels_from": "s"}]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "name": "t", "arms": arms, "comparisons": [["s", "c"], ["s", "p"]],
        "sweep": {"key": "dataset.label_budget", "values": [10, None]}}))
    t = load_table(tmp_path / "t.yaml")
    assert [a["key"] for a in t["arms"]] == ["s_10", "c_10", "p_10", "s_all", "c_all", "p_all"]
    assert t["arms"][2]["pseudo_labels_from"] == "s_10" and t["arms"][5]["pseudo_labels_from"] == "s_all"
    assert t["arms"][3]["label"] == "scratch, dataset.label_budget = all" and t["arms"][3]["sweep_value"] is None
    one = load_table(tmp_path / "t.yaml", ["dataset.label_budget=10", "solver.max_iter=3"], only=["p"])
    assert [a["key"] for a in one["arms"]] == ["s_10", "p_10"] and one["comparisons"] == [["s_10", "p_10"]]
    two = load_table(tmp_path / "t.yaml", ["dataset.label_budget=[null, 10]"])
    assert [a["key"] for a in two["arms"]] == ["s_all", "c_all", "p_all", "s_10", "c_10", "p_10"]
    with pytest.raises(ConfigError, match="--arms: no arm x"):
        load_table(tmp_path / "t.yaml", only=["x"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"name": "b", "arms": [arms[2], arms[0]]}))
    with pytest.raises(ConfigError, match="pseudo_labels_from: 's' is not an arm listed before 'p'"):
        load_table(tmp_path / "bad.yaml")


def test_the_first_net_label_curve_is_a_sweep_of_nested_budgets_with_the_eight_arms():
    t = load_table("configs/isbi/label_curve_first_net.yaml")
    assert t["sweep_key"] == "dataset.label_budget" and t["sweep_values"] == [10, 25, 54, None]
    assert {a["base_key"] for a in t["arms"]} == {"scratch", "cae", "augment", "denoise", "pseudo", "consistency",
                                                  "pseudo_ensemble", "pseudo_consistency"}
    by = {a["key"]: a for a in t["arms"]}
    assert by["pseudo_consistency_10"]["teachers"] == "ensemble" and by["pseudo_consistency_10"]["pseudo_labels_from"] == "scratch_10"
    assert set(t["pretrainings"]) == {"cae", "augment", "denoise"}
    assert ["scratch_25", "pseudo_25"] in t["comparisons"] and ["scratch_10", "denoise_10"] in t["comparisons"]
    cfg, _ = resolve_run(t["arms"][0]["config"], {**t, "preset": {}}, "scratch_10", 0, [], t["arms"][0]["set"])
    assert cfg["model"]["refine"]["patch"] == 0 and cfg["dataset"]["label_budget"] == 10


def test_the_label_curve_runs_the_full_recipe_with_the_unlabelled_arms_and_the_control():
    t = load_table("configs/isbi/label_curve.yaml")
    assert t["sweep_values"] == [10, 25, 54]
    assert [a["base_key"] for a in t["arms"][:5]] == ["scratch", "pseudo_mixed", "unlabelled", "consistency",
                                                      "scratch_ensemble"]
    by = {a["key"]: a for a in t["arms"]}
    assert by["pseudo_mixed_25"]["teachers"] == "ensemble" and by["unlabelled_25"]["starts_from"] == "pseudo_mixed_25"
    assert by["scratch_ensemble_25"]["ensemble_of"] == "scratch_25"
    assert ["scratch_25", "unlabelled_25"] in t["comparisons"]
    assert by["pseudo_round2_25"]["pseudo_labels_from"] == "unlabelled_25" and by["pseudo_round2_25"]["teachers"] == "ensemble"
    assert by["unlabelled_round2_25"]["starts_from"] == "pseudo_round2_25"
    cfg, _ = resolve_run(by["scratch_25"]["config"], {**t, "preset": {}}, "scratch_25", 0, [], by["scratch_25"]["set"])
    assert cfg["model"]["refine"]["patch"] > 0 and cfg["dataset"]["label_budget"] == 25
    only = load_table("configs/isbi/label_curve.yaml", ["dataset.label_budget=25"], ["scratch", "unlabelled"])
    assert [a["key"] for a in only["arms"]] == ["scratch_25", "pseudo_mixed_25", "unlabelled_25"]
    rounds = load_table("configs/isbi/label_curve.yaml", ["dataset.label_budget=25"], ["scratch", "unlabelled_round2"])
    assert [a["key"] for a in rounds["arms"]] == ["scratch_25", "pseudo_mixed_25", "unlabelled_25", "pseudo_round2_25",
                                                  "unlabelled_round2_25"]


def test_the_curve_draws_the_annotators_level_of_one_test_set_or_of_all():
    from dentcae.tables.curve import _inter_observer
    level = {"n_samples": 100, "mre_mm": 2.38, "sdr": {"2mm": 0.555}}
    one = {"arm": {"test1": {"inter_observer": {"senior_vs_junior": level}}}}
    assert _inter_observer(one) == {"label": "senior vs junior annotator (100 test images)", "mre_mm": 2.38,
                                    "sdr_2mm": 0.555}
    two = {"arm": {"test1": {}, "test2": {}, "all": {"inter_observer": {"senior_vs_junior": level}}}}
    assert _inter_observer(two)["mre_mm"] == 2.38
    assert _inter_observer({"arm": {"test1": {}, "test2": {"inter_observer": {"a_vs_b": level}}}}) is None
    assert _inter_observer({"arm": None}) is None


def test_the_gentle_pre_training_table_freezes_then_fine_tunes_every_layer_at_a_tenth():
    t = load_table("configs/isbi/gentle_pretrained.yaml")
    assert t["sweep_values"] == [25] and t["pretrainings"]["denoise"] == "configs/ours/denoise_ddpm_pretrain.yaml"
    by = {a["key"]: a for a in t["arms"]}
    assert by["cae_lpft_25"]["starts_from"] == "cae_lp_25" and by["augment_lpft_25"]["starts_from"] == "augment_lp_25"
    convs = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for key, init, freeze, mult in (("cae_gentle_25", "cae", [], 0.1), ("cae_lp_25", "cae", convs, 1.0),
                                    ("cae_lpft_25", "run", [], 0.1), ("augment_lp_25", "augment", convs, 1.0),
                                    ("ddpm_gentle_25", "denoise", [], 0.1)):
        cfg, _ = resolve_run(by[key]["config"], {**t, "preset": {}}, key, 0, [], by[key]["set"])
        m = cfg["model"]
        assert (m["init"], m["freeze"], m["copied_lr_mult"], m["refine"]["patch"]) == (init, freeze, mult, 0), key
