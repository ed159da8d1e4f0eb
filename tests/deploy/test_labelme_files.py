"""Predictions as LabelMe files and back: LabelMe's own reader opens them, its own writer saves a
correction, and `import labelme` reads exactly the corrected point and the others bit for bit.
(No Caffe: the image records are the ones predict writes; test_predict.py runs the verb itself.)"""
import csv
import json

import cv2
import numpy as np
import pytest

from conftest import write_dicom
from dentcae.data.importers import import_labelme
from dentcae.deploy.images import read_xray
from dentcae.deploy.labelme import labelme_stems, write_labelme

labelme = pytest.importorskip("labelme", reason="LabelMe (pip install 'dentcae[dev]') reads the files")
NAMES = ["S", "N", "Or"]


def _record(name, w, h, seed, flagged=(False, True, False)):
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(0, w - 1, 3), rng.uniform(0, h - 1, 3)], 1)
    return {"image": name, "width": w, "height": h, "landmarks": [
        {"name": n, "x_px": float(x), "y_px": float(y), "confidence": 0.1 if f else 0.9, "flag": f,
         "spread_mm": 0.4, "spread_px": 4.0} for n, (x, y), f in zip(NAMES, pts, flagged)]}


def _inputs(tmp):
    """Three X-rays as a user has them: PNG, JPEG with the same stem, DICOM."""
    src = tmp / "xrays"
    src.mkdir()
    grey = (np.arange(70 * 50) % 251).reshape(70, 50).astype(np.uint8)
    cv2.imwrite(str(src / "a.png"), grey)
    cv2.imwrite(str(src / "a.jpg"), grey)
    write_dicom(src / "b.dcm", (grey.astype(np.uint16) * 16), pixel_spacing=0.1)
    return src, ["a.png", "a.jpg", "b.dcm"]


def _write(tmp, src, names):
    stems, recs = labelme_stems(names), {}
    for i, n in enumerate(names):
        xray = read_xray(src / n)
        recs[n] = _record(n, xray.grey.shape[1], xray.grey.shape[0], i)
        write_labelme(tmp / "out/labelme", stems[n], recs[n], src / n, xray, "tiny")
    return stems, recs


def _csv_points(dataset):
    with open(dataset / "landmarks.csv") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def test_labelme_reads_the_files_and_import_gives_the_predicted_points_back(tmp_path, quiet):
    src, names = _inputs(tmp_path)
    stems, recs = _write(tmp_path, src, names)
    assert sorted(stems.values()) == ["a_jpg", "a_png", "b"]            # same stem: neither file is lost
    folder = tmp_path / "out/labelme"
    for n in names:
        lf = labelme.LabelFile(str(folder / f"{stems[n]}.json"))      # LabelMe's reader: image found, sizes right
        assert [s["label"] for s in lf.shapes] == NAMES and lf.image_data
        assert [s["flags"]["check"] for s in lf.shapes] == [False, True, False] and lf.flags["check_landmarks"]
        assert "CHECK" in lf.shapes[1]["description"] and "CHECK" not in lf.shapes[0]["description"]
        assert np.allclose([s["points"][0] for s in lf.shapes], [[m["x_px"], m["y_px"]] for m in recs[n]["landmarks"]])
    assert (folder / "a_png.png").is_symlink() and (folder / "b.png").is_file()       # DICOM: the grey the net read
    ds = import_labelme(folder, tmp_path / "ds", NAMES, 0.1, log=quiet)
    got = {r.name: r.landmarks for r in ds.images}
    for n in names:
        want = [[m["x_px"], m["y_px"]] for m in recs[n]["landmarks"]]
        image = f"images/{stems[n]}{'.png' if n.endswith('.dcm') else n[n.rfind('.'):]}"
        assert np.abs(got[image] - want).max() <= 0.001
    assert (tmp_path / "ds/images/a_png.png").resolve() == (src / "a.png").resolve()   # the user's X-ray itself
    assert sorted(p.name for p in src.iterdir()) == ["a.jpg", "a.png", "b.dcm"]        # nothing written in the input


def test_a_correction_saved_by_labelme_changes_exactly_that_landmark_on_reimport(tmp_path, quiet):
    src, names = _inputs(tmp_path)
    stems, _ = _write(tmp_path, src, names)
    folder = tmp_path / "out/labelme"
    import_labelme(folder, tmp_path / "ds", NAMES, 0.1, log=quiet)
    before = _csv_points(tmp_path / "ds")
    path = str(folder / "b.json")
    lf = labelme.LabelFile(path)                           # the annotator moves N and saves, as LabelMe does
    shapes = [dict(s, points=[[12.25, 30.5]] if s["label"] == "N" else s["points"], mask=None) for s in lf.shapes]
    lf.save(path, shapes, lf.image_path, None, None, lf.image_data, lf.other_data, {"check_landmarks": False})
    import_labelme(folder, tmp_path / "ds", NAMES, 0.1, overwrite=True, log=quiet)    # updates the earlier import
    after = _csv_points(tmp_path / "ds")
    changed = {(img, k) for img in before for k in before[img] if before[img][k] != after[img][k]}
    assert changed == {("images/b.png", "x2"), ("images/b.png", "y2")}
    assert (float(after["images/b.png"]["x2"]), float(after["images/b.png"]["y2"])) == (12.25, 30.5)
    assert json.loads((tmp_path / "out/labelme/a_png.json").read_text())["imageData"] is None


def test_embedded_images_and_a_shape_that_is_not_an_object(tmp_path, quiet):
    src, names = _inputs(tmp_path)
    xray = read_xray(src / "a.png")
    path = write_labelme(tmp_path / "lm", "a", _record("a.png", 50, 70, 0), src / "a.png", xray, "tiny", embed=True)
    assert labelme.LabelFile(str(path)).image_data == (src / "a.png").read_bytes()
    doc = json.loads(path.read_text())
    doc["shapes"].append(7)
    path.write_text(json.dumps(doc))
    from dentcae.data.dataset import DataError
    with pytest.raises(DataError, match=r"a.json: shapes\[3\] is not a LabelMe shape"):
        import_labelme(tmp_path / "lm", tmp_path / "ds", NAMES, 0.1, log=quiet)
