"""A trained detector on new X-rays: export a bundle (with ONNX), predict, and get what evaluate gets.

One tiny heatmap run with its refine net (and one regression run) on the SYNTHETIC phantom is
trained per module; every test here uses it. Bilateral phantom images go through the same cut and
mirror as training images.
"""
import csv
import json
import shutil
import sys

import cv2
import numpy as np
import pytest
import yaml

from conftest import predicted_rows, ROOT, evaluated_points, run_cli, images_of_test_split, tiny, write_dicom
from dentcae.deploy.bundle import BundleError, export_bundle, load_bundle
from dentcae.evaluation.evaluate import evaluate_checkpoint
from dentcae.train.loop import train
from dentcae.train.runfiles import run_dir

pytestmark = pytest.mark.slow


def _trained(tmp, phantom, head):
    model = {"head": "heatmap", "head_width": 16, "refine": {"patch": 80, "fine_size": 192, "draws": 2,
                                                             "max_iter": 6, "batch_size": 8}} \
        if head == "heatmap" else {"head": "regression"}
    cfg = tiny(tmp, phantom, name=f"{head}_run", prepare={"input_size": 96, "resize": "pad"},
               model=model, solver={"max_iter": 4, "batch_size": 4})
    train(cfg, log=lambda *a, **k: None)
    run = run_dir(cfg)
    evaluate_checkpoint(None, run)
    return cfg, run


@pytest.fixture(scope="module")
def heatmap_run(tmp_path_factory, phantom):
    tmp = tmp_path_factory.mktemp("predict")
    cfg, run = _trained(tmp, phantom, "heatmap")
    bundle = export_bundle(run, tmp / "bundle", onnx=True)
    yield cfg, run, bundle, tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _xy(row):
    return float(row["x_px"]), float(row["y_px"])


def test_predict_from_a_bundle_gives_what_evaluate_gives(heatmap_run):
    cfg, run, bundle, tmp = heatmap_run
    images = images_of_test_split(cfg)
    rc, out = run_cli("predict", str(bundle.path), *map(str, images), "--out", str(tmp / "p_caffe"))
    assert rc == 0, out
    got, want = predicted_rows(tmp / "p_caffe"), evaluated_points(cfg, run)
    assert len(got) == len(want) == len(images) * 8
    assert max(np.abs(np.subtract(_xy(got[k]), want[k])).max() for k in want) <= 0.01
    assert all(0 <= float(r["confidence"]) <= 1 for r in got.values())
    report = json.loads((tmp / "p_caffe" / "predictions.json").read_text())
    assert report["model"]["name"] == "heatmap_run" and len(report["images"]) == len(images)
    assert report["measurements"].startswith("none")          # phantom landmarks: no ISBI measurements
    assert all((tmp / "p_caffe" / "overlays" / f"{p.stem}.png").exists() for p in images)
    assert all(r["x_mm"] == "" for r in got.values())          # no spacing given: pixels only
    assert "no pixel spacing" in out


def test_onnx_runtime_predicts_the_same_without_caffe(heatmap_run):
    """--backend onnx in a process where `import caffe` fails: within 0.05 px of Caffe's."""
    cfg, run, bundle, tmp = heatmap_run
    assert set(bundle.info["onnx_max_abs_diff_vs_caffe"]) == {"first", "refine"}
    assert max(bundle.info["onnx_max_abs_diff_vs_caffe"].values()) < 1e-4
    images = [str(p) for p in images_of_test_split(cfg)]
    code = ("import sys; sys.modules['caffe'] = None\n"            # `import caffe` raises ImportError
            "from dentcae.cli import main\n"
            f"rc = main({['predict', str(bundle.path), *images, '--out', str(tmp / 'p_onnx'), '--backend', 'onnx']!r})\n"
            "assert 'caffe' not in sys.modules or sys.modules['caffe'] is None\n"
            "sys.exit(rc)\n")
    import subprocess
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    if not (tmp / "p_caffe").exists():
        run_cli("predict", str(bundle.path), *images, "--out", str(tmp / "p_caffe"), check=True)
    caffe_rows, onnx_rows = predicted_rows(tmp / "p_caffe"), predicted_rows(tmp / "p_onnx")
    assert max(np.abs(np.subtract(_xy(onnx_rows[k]), _xy(caffe_rows[k]))).max() for k in caffe_rows) <= 0.05


def test_dicom_spacing_gives_the_millimetres_of_the_png_with_spacing(heatmap_run):
    cfg, run, bundle, tmp = heatmap_run
    png = images_of_test_split(cfg)[0]
    grey = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    folder = tmp / "dicoms"
    folder.mkdir()
    write_dicom(folder / "calibrated.dcm", grey, pixel_spacing=0.3)
    write_dicom(folder / "detector.dcm", grey, imager_spacing=0.3)
    write_dicom(folder / "bare.dcm", grey)
    rc, out = run_cli("predict", str(bundle.path), str(png), "--spacing", "0.3", "--out", str(tmp / "p_png"))
    assert rc == 0, out
    rc, out = run_cli("predict", str(bundle.path), str(folder), "--out", str(tmp / "p_dcm"), "--no-overlays")
    assert rc == 0, out
    ref, got = predicted_rows(tmp / "p_png"), predicted_rows(tmp / "p_dcm")
    for (image, name), row in ref.items():
        for dicom in ("calibrated.dcm", "detector.dcm"):
            assert float(got[(dicom, name)]["x_mm"]) == pytest.approx(float(row["x_mm"]), abs=1e-3)
            assert float(got[(dicom, name)]["y_mm"]) == pytest.approx(float(row["y_mm"]), abs=1e-3)
        assert got[("bare.dcm", name)]["x_mm"] == "" and got[("bare.dcm", name)]["x_px"] == row["x_px"]
    report = {r["image"]: r for r in json.loads((tmp / "p_dcm" / "predictions.json").read_text())["images"]}
    assert report["calibrated.dcm"]["spacing_source"] == "PixelSpacing" and not report["calibrated.dcm"]["warnings"]
    assert any("ImagerPixelSpacing" in w for w in report["detector.dcm"]["warnings"])
    assert report["bare.dcm"]["spacing_mm"] is None and any("pixels only" in w for w in report["bare.dcm"]["warnings"])


def test_a_changed_weight_file_is_refused_by_name(heatmap_run, tmp_path):
    _, _, bundle, _ = heatmap_run
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    load_bundle(copy)                                        # intact: loads
    weights = copy / "nets" / "refine.caffemodel"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="nets/refine.caffemodel"):
        load_bundle(copy)
    rc, out = run_cli("predict", str(copy), str(tmp_path), "--out", str(tmp_path.parent / "never"))
    assert rc == 1 and "refine.caffemodel" in out and "checksum" in out


def test_unreadable_inputs_go_to_errors_csv_and_the_rest_go_on(heatmap_run, tmp_path):
    cfg, _, bundle, _ = heatmap_run
    good = images_of_test_split(cfg)[0]
    shutil.copy(good, tmp_path / good.name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    out = tmp_path.parent / f"{tmp_path.name}_out"
    rc, text = run_cli("predict", str(bundle.path), str(tmp_path), "--out", str(out))
    assert rc == 1 and "1 failed" in text
    with open(out / "errors.csv") as fh:
        errors = list(csv.DictReader(fh))
    assert [e["image"] for e in errors] == ["broken.png"] and "truncated" in errors[0]["error"]
    assert {k[0] for k in predicted_rows(out)} == {good.name}
    rc, text = run_cli("predict", str(bundle.path), str(tmp_path), "--out", str(tmp_path / "inside"))
    assert rc == 1 and "lies inside the input" in text


def test_export_refuses_an_existing_folder_its_own_run_and_a_folder_that_is_no_run(heatmap_run):
    cfg, run, bundle, tmp = heatmap_run
    with pytest.raises(BundleError, match="exists"):
        export_bundle(run, bundle.path)
    with pytest.raises(BundleError, match="inside its run folder"):
        export_bundle(run, run / "bundle")
    with pytest.raises(BundleError, match="not a run folder"):
        export_bundle(tmp / "runs", tmp / "b2")


def test_a_run_folder_whose_dataset_is_not_there_says_so_and_points_to_export(heatmap_run):
    cfg, run, bundle, tmp = heatmap_run
    moved = tmp / "moved_run"
    shutil.copytree(run, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["dataset"]["root"] = "data/not_here"            # relative: the folder it was trained in
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    image = images_of_test_split(cfg)[0]
    rc, out = run_cli("predict", str(moved), str(image), "--out", str(tmp / "p_moved"))
    assert rc == 1 and f"{moved}: a run folder needs the data it was trained on" in out
    assert "data/not_here" in out and "dentcae export" in out and not (tmp / "p_moved").exists()
    rc, out = run_cli("predict", str(bundle.path), str(image), "--out", str(tmp / "p_bundle"), "--no-overlays")
    assert rc == 0, out                                     # the bundle needs no dataset


def test_the_regression_head_exports_and_predicts_without_confidence(phantom, tmp_path):
    cfg, run = _trained(tmp_path, phantom, "regression")
    rc, out = run_cli("export", str(run), "--out", str(tmp_path / "reg_bundle"), "--onnx")
    assert rc == 0, out
    images = images_of_test_split(cfg)
    for backend in ("caffe", "onnx"):
        rc, out = run_cli("predict", str(tmp_path / "reg_bundle"), *map(str, images), "--out",
                          str(tmp_path / backend), "--backend", backend, "--spacing", "0.25", "--no-overlays")
        assert rc == 0, out
    got, want = predicted_rows(tmp_path / "caffe"), evaluated_points(cfg, run)
    assert max(np.abs(np.subtract(_xy(got[k]), want[k])).max() for k in want) <= 0.01
    onnx_rows = predicted_rows(tmp_path / "onnx")
    assert max(np.abs(np.subtract(_xy(onnx_rows[k]), _xy(got[k]))).max() for k in got) <= 0.05
    assert all(r["confidence"] == "" and r["flag"] == "0" for r in got.values())
    assert all(float(r["x_mm"]) == pytest.approx(float(r["x_px"]) * 0.25, abs=1e-3) for r in got.values())


def test_a_mangled_model_json_is_refused_by_name_and_overwrite_spares_other_tools(heatmap_run, tmp_path):
    _, run, bundle, _ = heatmap_run
    for name, mangle in (("list", lambda info: []), ("no_sums", lambda info: {**info, "checksums": {}}),
                         ("one_sum_less", lambda info: {**info, "checksums": {k: v for k, v in info["checksums"].items()
                                                                            if k != "nets/refine.caffemodel"}})):
        copy = tmp_path / name
        shutil.copytree(bundle.path, copy)
        info = json.loads((copy / "model.json").read_text())
        (copy / "model.json").write_text(json.dumps(mangle(info)))
        with pytest.raises(BundleError, match="model.json"):
            load_bundle(copy)
    other = tmp_path / "other_tool"
    other.mkdir()
    (other / "model.json").write_text('{"framework": "someone else"}')
    (other / "weights.bin").write_text("theirs")
    with pytest.raises(BundleError, match="exists"):
        export_bundle(run, other, overwrite=True)
    assert (other / "weights.bin").read_text() == "theirs"


def test_predict_labelme_files_import_back_to_the_predicted_points(heatmap_run, tmp_path):
    pytest.importorskip("labelme", reason="LabelMe (pip install 'dentcae[dev]') reads the files")
    from labelme import LabelFile
    cfg, run, bundle, tmp = heatmap_run
    images = images_of_test_split(cfg)[:2]
    rc, out = run_cli("predict", str(bundle.path), *map(str, images), "--out", str(tmp_path / "p"), "--labelme")
    assert rc == 0, out
    got = predicted_rows(tmp_path / "p")
    names = bundle.landmarks
    for img in images:
        lf = LabelFile(str(tmp_path / "p/labelme" / f"{img.stem}.json"))
        flagged = {s["label"] for s in lf.shapes if s["flags"]["check"]}
        assert flagged == {n for n in names if got[(img.name, n)]["flag"] == "1"}
    rc, out = run_cli("import", "labelme", str(tmp_path / "p/labelme"), "--landmarks", ",".join(names),
                      "--spacing", "0.1", "--out", str(tmp_path / "ds"))
    assert rc == 0, out
    with open(tmp_path / "ds/landmarks.csv") as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    for img in images:
        row = rows[f"images/{img.name}"]
        for i, n in enumerate(names, 1):
            assert abs(float(row[f"x{i}"]) - float(got[(img.name, n)]["x_px"])) <= 0.001
            assert abs(float(row[f"y{i}"]) - float(got[(img.name, n)]["y_px"])) <= 0.001


def test_select_with_the_detectors_encoder_as_features(heatmap_run, phantom, tmp_path):
    cfg, run, bundle, tmp = heatmap_run
    for features in (str(bundle.path), str(run)):
        out = tmp_path / f"sel_{len(features)}.csv"
        rc, text = run_cli("select", str(phantom), "--budget", "3", "--out", str(out), "--features", features)
        assert rc == 0, text
        with open(out) as fh:
            rows = list(csv.DictReader(fh))
        assert 1 <= sum(r["chosen"] == "1" for r in rows) <= 3 and out.with_suffix(".png").is_file()
    from dentcae.inference.features import encoder_features, model_encoder
    from dentcae.deploy.bundle import open_model
    grey = cv2.imread(str(images_of_test_split(cfg)[0]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    a, b = encoder_features(model_encoder(open_model(bundle.path)), [grey, grey[:, ::-1]])
    assert a.shape == b.shape and abs(np.linalg.norm(a) - 1) < 1e-5 and np.isfinite(a).all()


def test_predicting_again_into_one_folder_replaces_it_whole(heatmap_run, tmp_path):
    cfg, run, bundle, tmp = heatmap_run
    images = images_of_test_split(cfg)
    out = tmp_path / "p"
    run_cli("predict", str(bundle.path), *map(str, images), "--out", str(out), "--labelme", check=True)
    run_cli("predict", str(bundle.path), str(images[0]), "--out", str(out), check=True)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{images[0].stem}.png"]   # no stale overlays
    assert not (out / "labelme").exists() and json.loads((out / "predictions.json").read_text())["written_by"] == "dentcae predict"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]                          # no staged leftovers
