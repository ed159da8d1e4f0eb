"""Shared fixtures: real pycaffe, a tiny synthetic phantom, and tiny configs that train in seconds.

Two tiers: `make test-fast` runs `pytest -m "not slow"` (pure and data tests, no nets, no Caffe
needed); `make test` runs everything. A test that builds or trains a Caffe net is marked `slow`.
Tests sit in folders named after the package they test (tests/data/, tests/heads/, ...).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import csv

import h5py
import numpy as np
import pytest
import yaml

from dentcae.config import load_config, merge
from dentcae.data.geometry import sample_box, to_pixels
from dentcae.data.prepare import prepare
from dentcae.evaluation.metrics import read_prediction_errors

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLOG_minloglevel", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds or trains Caffe nets (make test only, not test-fast)")


@pytest.fixture(scope="session")
def caffe():
    from dentcae.runtime.backend import get_caffe
    c = get_caffe()
    c.set_mode_cpu()
    return c


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    """12 SYNTHETIC images, 8 annotated: 24 halves, enough for every split."""
    from dentcae.data.phantom import write_phantom
    return write_phantom(tmp_path_factory.mktemp("data") / "phantom", images=12, annotated=8, seed=3)


TEST_FC_WIDTH = 64     # narrow fc6/fc7 (AlexNet: 4096): same layer names and code paths, 1/60 the weights


def tiny_config(tmp, root, stage="finetune", **over):
    """Write a config that trains narrow AlexNet nets for a few iterations at batch 2; returns its
    path, tmp/<name>.yaml (name: tiny_<stage> unless given)."""
    base = {"name": f"tiny_{stage}", "stage": stage, "runs_dir": str(tmp / "runs"),
            "dataset": {"root": str(root), "synth": None},
            "prepare": {"cache_dir": str(tmp / "cache"), "cae_holdout": 0.15, "regressor_holdout": 0.25},
            "model": {"init": "scratch", "fc_width": TEST_FC_WIDTH},
            "solver": {"type": "Adam", "base_lr": 1e-4, "lr_policy": "fixed", "max_iter": 4,
                       "batch_size": 2, "test_batch_size": 4, "test_interval": 2, "snapshot": 2}}
    cfg = merge(base, over)
    path = tmp / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny(tmp, root, stage="finetune", **over):
    """The resolved config of tiny_config(...)."""
    return load_config(tiny_config(tmp, root, stage, **over))


def run_cli(*args, env=None, check=False):
    """`dentcae ARGS` in a subprocess: (returncode, stdout + stderr)."""
    p = subprocess.run([sys.executable, "-m", "dentcae.cli", *args], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, **(env or {})})
    if check and p.returncode:
        raise AssertionError(p.stdout + p.stderr)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def quiet():
    """A log function that prints nothing: training and import steps take `log=quiet`."""
    return lambda *args, **kwargs: None


@pytest.fixture
def clean_tmp(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)  # runs hold hundreds of MB of weights


def recompute_errors(pred_csv):
    """(N, K) mm errors of a predictions.csv, after checking its error column against its coordinates."""
    with open(pred_csv) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:   # error columns agree with the coordinates
        px = np.hypot(float(r["pred_x"]) - float(r["gt_x"]), float(r["pred_y"]) - float(r["gt_y"]))
        assert float(r["error_px"]) == pytest.approx(px, abs=2e-3)
    return read_prediction_errors(pred_csv)[0]


def baseline_mm(cfg, pred_csv):
    """The mean-shape baseline recomputed by hand: mean training label, mapped into each test sample."""
    prep = prepare(cfg)
    with h5py.File(prep.h5("reg_train"), "r") as f:
        mean = f["label"][...].mean(0).reshape(-1, 2)
    samples = {s["index"]: s for s in prep.samples()}
    errs = []
    for r in csv.DictReader(open(pred_csv)):
        s = samples[r["sample"]]
        x, y = to_pixels(mean, *sample_box(s))[int(r["landmark"]) - 1]
        errs.append(np.hypot(x - float(r["gt_x"]), y - float(r["gt_y"])) * float(s["spacing_mm"]))
    return float(np.mean(errs))


def write_dicom(path, pixels, pixel_spacing=None, imager_spacing=None, monochrome1=False, window=None):
    """A DICOM X-ray (pydicom) of grey `pixels` (uint8 or uint16), with the spacings given."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"        # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "phantom"
    pixels = np.asarray(pixels)
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.set_pixel_data(pixels, "MONOCHROME1" if monochrome1 else "MONOCHROME2", bits)
    if pixel_spacing is not None:
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = [imager_spacing, imager_spacing]
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.save_as(str(path), enforce_file_format=True)
    return path


def images_of_test_split(cfg):
    """The image files of a config's prepared test split."""
    names = dict.fromkeys(s["image"] for s in prepare(cfg).samples() if int(s["reg_test"]))
    return [Path(cfg["dataset"]["root"]) / n for n in names]


def evaluated_points(cfg, folder):
    """{(image file name, landmark name): (x, y)} of evaluate's predictions.csv in `folder`."""
    from dentcae.data.prepare import configured_dataset
    ds = configured_dataset(cfg)
    with open(Path(folder) / "predictions.csv") as fh:
        return {(Path(r["image"]).name, ds.landmark_names[ds.side_indices(r["side"])[int(r["landmark"]) - 1]]):
                (float(r["pred_x"]), float(r["pred_y"])) for r in csv.DictReader(fh)}


def predicted_rows(folder):
    """{(image, landmark name): row} of `dentcae predict`'s predictions.csv in `folder`."""
    with open(Path(folder) / "predictions.csv") as fh:
        return {(r["image"], r["landmark"]): r for r in csv.DictReader(fh)}

