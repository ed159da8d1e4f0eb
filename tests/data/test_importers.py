"""Importers (ISBI 2015, LabelMe), nested image paths, pinned splits, label budget, subsets."""
import base64
import csv
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli, tiny
from dentcae.data.dataset import DataError, load_dataset
from dentcae.data.importers import import_isbi2015, import_labelme
from dentcae.data.importers.isbi2015 import LANDMARKS
from dentcae.data.prepare import prepare
from dentcae.data.geometry import to_normalised

SHARED_ISBI = ROOT.parent / "shared/data/isbi2015-ceph-200"


def _png(path, w=60, h=80, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w), value, np.uint8)
    cv2.imwrite(str(path), img)
    return path


def _points(seed, n=19, w=60, h=80):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, w - 2, n), rng.uniform(0, h - 2, n)], 1).round(2)   # + 1 stays inside


def _write_points(path, pts, extra=("1", "2")):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(f"{x:g},{y:g}" for x, y in pts) + "\n" + "\n".join(extra) + "\n")


def _isbi(tmp, junior=False):
    """A tiny ISBI 2015 layout: two training images (PNG and BMP) and one Test1 image."""
    src = tmp / "isbi"
    _png(src / "RawImage/TrainingData/001.png")
    cv2.imwrite(str(src / "RawImage/TrainingData/002.bmp"), np.zeros((80, 60), np.uint8))
    _png(src / "RawImage/Test1Data/151.png")
    for i, stem in enumerate(("001", "002", "151")):
        _write_points(src / f"AnnotationsByMD/400_senior/{stem}.txt", _points(i))
        if junior:
            _write_points(src / f"AnnotationsByMD/400_junior/{stem}.txt", _points(i) + 1.0)
    return src


def _leftovers(parent):
    return [p.name for p in Path(parent).iterdir() if ".partial-" in p.name]


def test_isbi_import_writes_a_valid_dataset(tmp_path, quiet):
    src = _isbi(tmp_path, junior=True)
    ds = import_isbi2015(src, tmp_path / "out", spacing=0.3, log=quiet)
    assert ds.landmark_names == LANDMARKS and ds.layout == "whole" and len(ds.images) == 3
    recs = {r.name: r for r in ds.images}
    assert set(recs) == {"images/TrainingData/001.png", "images/TrainingData/002.bmp", "images/Test1Data/151.png"}
    assert [recs[n].split for n in sorted(recs)] == ["test1", "train", "train"]
    np.testing.assert_allclose(recs["images/TrainingData/001.png"].landmarks, _points(0), atol=1e-9)
    assert all(r.spacing_mm == 0.3 for r in ds.images) and recs["images/TrainingData/002.bmp"].group == "002"
    assert (tmp_path / "out/images/Test1Data/151.png").is_symlink()      # linked, not copied
    mean = import_isbi2015(src, tmp_path / "mean", annotator="mean", log=quiet)
    np.testing.assert_allclose({r.name: r for r in mean.images}["images/Test1Data/151.png"].landmarks,
                               _points(2) + 0.5, atol=1e-9)                      # the midpoint of both
    assert load_dataset(tmp_path / "mean").images[0].spacing_mm == 0.1          # the challenge's default
    assert mean.annotator == "mean" and sorted(mean.annotations) == ["junior", "senior"]
    np.testing.assert_allclose(mean.annotations["junior"]["images/Test1Data/151.png"], _points(2) + 1.0, atol=1e-9)
    np.testing.assert_allclose(ds.annotations["senior"]["images/TrainingData/001.png"], _points(0), atol=1e-9)


def test_isbi_import_refuses_annotator_folders_of_other_ids_and_groups_duplicates(tmp_path, quiet):
    src = _isbi(tmp_path, junior=True)
    (src / "duplicates.csv").write_text("id_a,folder_a,id_b,folder_b\n001,TrainingData,151,Test1Data\n"
                                        "002,TrainingData,999,Test2Data\n")
    ds = import_isbi2015(src, tmp_path / "dup", log=quiet)
    assert {r.name.split("/")[-1]: r.group for r in ds.images} == {"001.png": "001", "151.png": "001", "002.bmp": "002"}
    (src / "AnnotationsByMD/400_junior/002.txt").unlink()
    with pytest.raises(DataError, match=r"400_senior and 400_junior annotate different ids \(1 in one only: 002\)"):
        import_isbi2015(src, tmp_path / "bad", log=quiet)
    assert not (tmp_path / "bad").exists() and not _leftovers(tmp_path)


def test_isbi_import_cli_prints_what_it_wrote_and_refuses_to_overwrite(tmp_path):
    src = _isbi(tmp_path)
    code, out = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"), "--spacing", "0.3")
    assert code == 0 and "3 images (3 annotated; senior landmarks), 1 test1, 2 train, 19 landmarks, 0.3 mm/px" in out, out
    before = (tmp_path / "o/landmarks.csv").read_bytes()
    code, out = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"))
    assert code == 2 and "exists and is not empty" in out and "--overwrite" in out
    assert (tmp_path / "o/landmarks.csv").read_bytes() == before
    code, out = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"), "--overwrite")
    assert code == 0 and yaml.safe_load((tmp_path / "o/dataset.yaml").read_text())["spacing_mm"] == 0.1


def _lines(pts):
    return [f"{x:g},{y:g}" for x, y in pts]


ISBI_BAD = {
    "too few points": (lambda p: p.write_text("\n".join(_lines(_points(0))[:18]) + "\n"),
                       r"001.txt: has 18 lines, expected 19"),
    "non-numeric value": (lambda p: p.write_text("\n".join(["12,abc"] + _lines(_points(0))[1:]) + "\n"),
                          r"001.txt: line 1: expected 'x,y' with two numbers, got '12,abc'"),
    "point outside the image": (lambda p: p.write_text("\n".join(_lines(_points(0))[:4] + ["61,10"] + _lines(_points(0))[5:]) + "\n"),
                                r"001.txt for .*001.png: point 5 \(61, 10\) lies outside the 60x80 image"),
    "unreadable image": (lambda p: (p.parents[2] / "RawImage/TrainingData/001.png").write_bytes(b"junk" * 20),
                         r"001.png: cannot read the image"),
}


@pytest.mark.parametrize("case", list(ISBI_BAD))
def test_isbi_bad_input_names_file_and_line_and_writes_nothing(case, tmp_path, quiet):
    src = _isbi(tmp_path)
    edit, message = ISBI_BAD[case]
    edit(src / "AnnotationsByMD/400_senior/001.txt")
    with pytest.raises(DataError, match=message):
        import_isbi2015(src, tmp_path / "out", log=quiet)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def _labelme(path, image_path=None, data=None, points=(("S", 10, 20), ("N", 30, 40)), w=60, h=80):
    doc = {"version": "5.2.1", "shapes": [{"label": l, "points": [[x, y]], "shape_type": "point"} for l, x, y in points],
           "imagePath": image_path, "imageData": data, "imageWidth": w, "imageHeight": h}
    doc["shapes"].append({"label": "outline", "points": [[0, 0], [5, 5]], "shape_type": "polygon"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_labelme_import_uses_files_or_embedded_data_and_renames(tmp_path, quiet):
    src = tmp_path / "lm"
    _png(src / "a/one.png")
    _labelme(src / "a/one.json", image_path="one.png")
    raw = cv2.imencode(".png", np.full((80, 60), 7, np.uint8))[1].tobytes()
    _labelme(src / "two.json", image_path="missing.jpg", data=base64.b64encode(raw).decode(),
             points=(("N", 1, 2), ("S", 3, 4)))
    ds = import_labelme(src, tmp_path / "out", ["S", "N"], 0.1, names=["sella", "nasion"], log=quiet)
    assert ds.landmark_names == ["sella", "nasion"] and ds.layout == "whole"
    recs = {r.name: r for r in ds.images}
    np.testing.assert_allclose(recs["images/a/one.png"].landmarks, [[10, 20], [30, 40]])
    np.testing.assert_allclose(recs["images/two.png"].landmarks, [[3, 4], [1, 2]])     # in --landmarks order
    assert (tmp_path / "out/images/a/one.png").is_symlink()
    assert cv2.imread(str(tmp_path / "out/images/two.png"), cv2.IMREAD_GRAYSCALE).max() == 7


LABELME_BAD = {
    "label given twice": (dict(points=(("S", 1, 2), ("S", 3, 4), ("N", 5, 6))), r"one.json: label 'S' is given twice"),
    "label missing": (dict(points=(("S", 1, 2),)), r"one.json: requested label 'N' missing"),
    "point outside": (dict(points=(("S", 1, 2), ("N", 70, 6))), r"one.json: point 2 \(70, 6\) lies outside the 60x80 image"),
    "point not finite": (dict(points=(("S", float("nan"), 2), ("N", 5, 6))), r"one.json: label 'S' is at \(nan, 2\), not a finite"),
    "another image's size": (dict(w=120, h=160), r"one.json: the file says its image is 120x160 \(imageWidth x imageHeight\), "
                                                 r"the image is 60x80"),
}


@pytest.mark.parametrize("case", list(LABELME_BAD))
def test_labelme_bad_files_stop_or_stay_unannotated_with_skip_bad(case, tmp_path, quiet):
    src = tmp_path / "lm"
    _png(src / "one.png")
    _labelme(src / "one.json", image_path="one.png", **LABELME_BAD[case][0])
    _png(src / "ok.png")
    _labelme(src / "ok.json", image_path="ok.png")
    with pytest.raises(DataError, match=LABELME_BAD[case][1]):
        import_labelme(src, tmp_path / "out", ["S", "N"], 0.1, log=quiet)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    ds = import_labelme(src, tmp_path / "out", ["S", "N"], 0.1, skip_bad=True, log=quiet)
    recs = {r.name: r for r in ds.images}
    assert np.isnan(recs["images/one.png"].landmarks).all() and not np.isnan(recs["images/ok.png"].landmarks).any()
    report = json.loads((tmp_path / "out/import.json").read_text())
    assert [u["file"].endswith("one.json") for u in report["unannotated"]] == [True]
    assert LABELME_BAD[case][1].split(": ", 1)[1].replace("\\", "")[:12] in report["unannotated"][0]["error"]


def test_labelme_image_path_outside_the_folder_is_never_opened(tmp_path, quiet):
    _png(tmp_path / "secret.png", value=99)
    src = tmp_path / "lm"
    _labelme(src / "x.json", image_path="../secret.png")
    with pytest.raises(DataError, match=r"x.json: no image: imagePath '../secret.png' is not a file inside"):
        import_labelme(src, tmp_path / "out", ["S", "N"], 0.1, log=quiet)


# ---- the dataset format: nested names, escapes, pinned splits, label budget, landmark subsets ----

def _nested(tmp, rows_extra=None):
    """A whole-layout dataset with images in sub-folders, a hidden folder, and a split column."""
    root = tmp / "nested"
    for i in range(10):
        _png(root / f"images/{'a' if i < 5 else 'b'}/{i:03d}.png")
    _png(root / ".hidden/ignored.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump({"name": "nested", "landmarks": ["p", "q", "r"],
                                                       "spacing_mm": 0.2, "layout": "whole"}))
    rows = [["image", "x1", "y1", "x2", "y2", "x3", "y3", "split"]]
    for i in range(10):
        pts = _points(i, n=3).reshape(-1)
        rows.append([f"images/{'a' if i < 5 else 'b'}/{i:03d}.png", *pts, "test" if i >= 7 else "" if i == 6 else "train"])
    rows += rows_extra or []
    with (root / "landmarks.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root


def test_nested_image_names_and_hidden_folders(tmp_path):
    ds = load_dataset(_nested(tmp_path))
    assert len(ds.images) == 10 and all(r.name.startswith("images/") for r in ds.images)
    assert [r.split for r in ds.images] == ["train"] * 6 + [""] + ["test"] * 3


@pytest.mark.parametrize("name, message", [("../outside.png", r"row 12: image '../outside.png' leaves the dataset folder"),
                                           ("/etc/passwd.png", r"row 12: image '/etc/passwd.png' is an absolute path"),
                                           ("images/../../x.png", r"row 12: image 'images/../../x.png' leaves")])
def test_image_names_that_escape_the_folder_are_refused(tmp_path, name, message):
    _png(tmp_path / "outside.png")
    root = _nested(tmp_path, [[name, 1, 1, 2, 2, 3, 3, ""]])
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_pinned_splits_label_budget_and_landmark_subset(tmp_path):
    root = _nested(tmp_path)
    cfg = tiny(tmp_path, root, dataset={"label_budget": 3, "landmarks": ["r", "p"]})
    prep = prepare(cfg)
    samples = prep.samples()
    test = {s["image"] for s in samples if int(s["reg_test"])}
    pinned = {"images/b/007.png", "images/b/008.png", "images/b/009.png"}
    assert test == pinned | {"images/b/006.png"}     # the pinned three, and the one unpinned image (holdout)
    assert not any(int(s["cae_train"]) or int(s["cae_test"]) for s in samples if s["image"] in pinned)
    train = {s["image"] for s in samples if int(s["reg_train"])}
    assert len(train) == 3 and train < {f"images/{'a' if i < 5 else 'b'}/{i:03d}.png" for i in range(6)}
    assert prep.meta["labelled_train_images"] == 3
    assert prep.count("cae_train") + prep.count("cae_test") == 7        # every unpinned-test image pre-trains
    assert prep.meta["landmark_names"] == ["r", "p"] and prep.meta["num_landmarks"] == 2
    with h5py.File(prep.h5("reg_test"), "r") as f:         # test samples 006..009, landmarks r then p
        labels = f["label"][...]
    expected = [to_normalised(_points(i, n=3)[[2, 0]], 0, 0, 60, 80, False).reshape(-1) for i in range(6, 10)]
    np.testing.assert_allclose(labels, expected, atol=1e-6)
    other = prepare(tiny(tmp_path, root, dataset={"label_budget": 3, "landmarks": ["r", "p"]}, prepare={"split_seed": 4}))
    assert pinned <= {s["image"] for s in other.samples() if int(s["reg_test"])}      # pins hold for any seed
    assert {s["image"] for s in other.samples() if int(s["reg_train"])} != train     # the budget draw is seeded
    with pytest.raises(DataError, match=r"dataset.landmarks: 'z' is not a landmark .*known: p, q, r"):
        prepare(tiny(tmp_path, root, dataset={"landmarks": ["z"]}))
    with pytest.raises(DataError, match=r"label_budget is 9, but only 6 annotated training images"):
        prepare(tiny(tmp_path, root, dataset={"label_budget": 9}))


@pytest.mark.skipif(not SHARED_ISBI.exists(), reason="../shared/data/isbi2015-ceph-200 is not here")
def test_import_the_shared_isbi_set_and_prepare_it(tmp_path, quiet):
    ds = import_isbi2015(SHARED_ISBI, tmp_path / "isbi", spacing=0.3, log=quiet)
    assert len(ds.images) == 200 and len(ds.landmark_names) == 19
    assert {r.spacing_mm for r in ds.images} == {0.3}
    first = next(r for r in ds.images if r.name == "images/TrainingData/001.png")
    np.testing.assert_allclose(first.landmarks[0], [278.00, 331.67])          # image 001's sella
    prep = prepare(tiny(tmp_path, tmp_path / "isbi", dataset={"label_budget": 54,
                                                                "landmarks": ["lower_incisal_incision", "menton"]}))
    assert prep.meta["labelled_train_images"] == 54 and prep.meta["test_images"] == 100
    assert prep.count("cae_train") + prep.count("cae_test") == 100 and prep.meta["spacing_mm"] == [0.3]


SHARED_ISBI_400 = ROOT.parent / "shared/data/isbi2015-ceph-400"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_ISBI_400.exists(), reason="../shared/data/isbi2015-ceph-400 is not here")
def test_import_the_complete_isbi_set_with_both_annotators_and_its_leaks(tmp_path, quiet):
    """Counts asserted from the folder read: its RawImage folders and duplicates.csv."""
    import csv
    folders = {f.name: len(list(f.glob("*.png"))) for f in (SHARED_ISBI_400 / "RawImage").iterdir()}
    with (SHARED_ISBI_400 / "duplicates.csv").open() as fh:
        pairs = list(csv.DictReader(fh))
    ds = import_isbi2015(SHARED_ISBI_400, tmp_path / "isbi", spacing=0.3, annotator="mean", log=quiet)
    assert len(ds.images) == sum(folders.values()) and all(r.annotated for r in ds.images)
    pins = {"TrainingData": "train", "Test1Data": "test1", "Test2Data": "test2"}
    assert {p: sum(r.split == p for r in ds.images) for p in pins.values()} == {pins[f]: n for f, n in folders.items()}
    assert sorted(ds.annotations) == ["junior", "senior"]
    rec = ds.images[0]
    np.testing.assert_allclose(rec.landmarks, (ds.annotations["senior"][rec.name] + ds.annotations["junior"][rec.name]) / 2)
    groups = {}
    for r in ds.images:
        groups.setdefault(r.group, []).append(r.split)
    assert sum(len(v) == 2 for v in groups.values()) == len(pairs)
    leaking = [p for p in pairs if {p["folder_a"], p["folder_b"]} == {"TrainingData", "Test1Data"}]
    cfg = tiny(tmp_path, tmp_path / "isbi", prepare={"input_size": 67})
    keep = prepare(cfg)
    assert len(keep.meta["leaks"]["images"]) == len(leaking) and keep.meta["labelled_train_images"] == folders["TrainingData"]
    assert keep.meta["test_sets"] == {"test1": folders["Test1Data"], "test2": folders["Test2Data"]}
    cfg["prepare"]["test_duplicates"] = "drop"
    drop = prepare(cfg)
    assert drop.meta["labelled_train_images"] == folders["TrainingData"] - len(leaking)
    cfg["dataset"]["label_budget"] = 54
    assert prepare(cfg).meta["labelled_train_images"] == 54


@pytest.mark.parametrize("annotator", ["junior", "mean"])
def test_an_annotator_whose_folder_is_missing_is_refused_by_name(tmp_path, quiet, annotator):
    src = _isbi(tmp_path)                                  # senior only
    with pytest.raises(DataError, match=rf"--annotator {annotator} needs .*400_junior is not there"):
        import_isbi2015(src, tmp_path / "out", spacing=0.3, annotator=annotator, log=quiet)
    assert not (tmp_path / "out").exists()


def test_duplicate_chains_form_one_group_and_ids_match_however_padded(tmp_path, quiet):
    src = _isbi(tmp_path)
    _png(src / "RawImage/TrainingData/003.png")
    _write_points(src / "AnnotationsByMD/400_senior/003.txt", _points(3))
    (src / "duplicates.csv").write_text("id_a,id_b\n1,002\n002,151\n003,9\n")    # 001=002=151; 9 is not here
    import_isbi2015(src, tmp_path / "out", spacing=0.3, log=quiet)
    with open(tmp_path / "out/landmarks.csv") as fh:
        groups = {Path(r["image"]).stem: r["group"] for r in csv.DictReader(fh)}
    assert groups == {"001": "001", "002": "001", "151": "001", "003": "003"}


def test_a_dangling_linked_image_is_refused_by_name_not_skipped(tmp_path, quiet):
    src = _isbi(tmp_path)
    (src / "RawImage/TrainingData/009.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"009.png: a link to .*gone.png, which does not exist"):
        import_isbi2015(src, tmp_path / "out", spacing=0.3, log=quiet)
