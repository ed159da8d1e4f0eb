"""Importers never delete or write into their source, and bad input stops with a message, not a
traceback or a hang; nothing half-written stays behind (through the CLI, as a user runs them)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from test_importers import _isbi, _labelme, _leftovers, _png


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_an_output_folder_that_is_contains_or_lies_inside_the_source_is_refused(tmp_path, where):
    src = _isbi(tmp_path)
    (tmp_path / "sibling").mkdir()
    (tmp_path / "sibling/keep.txt").write_text("mine")
    out = {"same": src, "parent": tmp_path, "inside": src / "out"}[where]
    before = _files(tmp_path)
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(out), "--spacing", "0.3", "--overwrite")
    assert code == 2 and "the source folder" in text and "Traceback" not in text, text
    assert _files(tmp_path) == before                            # nothing deleted, nothing written


def test_overwrite_replaces_only_a_folder_an_earlier_import_wrote(tmp_path):
    src = _isbi(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(mine), "--overwrite")
    assert code == 2 and "no import.json" in text and (mine / "thesis.tex").read_text() == "years of work"
    assert run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"))[0] == 0
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"), "--overwrite", "--spacing", "0.3")
    assert code == 0, text


def test_isbi_bad_input_is_named(tmp_path):
    src = _isbi(tmp_path)
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"), "--spacing", "inf")
    assert code == 2 and "--spacing must be a positive, finite number" in text
    ann = src / "AnnotationsByMD/400_senior/002.txt"
    ann.unlink()
    ann.mkdir()
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"))
    assert code == 2 and "002.txt: annotation file is not a regular file" in text and "Traceback" not in text
    ann.rmdir()
    os.mkfifo(ann)                                       # reading a FIFO would block for ever
    p = subprocess.run([sys.executable, "-m", "dentcae.cli", "import", "isbi2015", str(src), "--out",
                        str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not a regular file" in p.stderr
    ann.unlink()
    _png(src / "RawImage/Test2Data/301.png")             # an image without annotation, and the reverse
    (src / "AnnotationsByMD/400_senior/399.txt").write_text((src / "AnnotationsByMD/400_senior/001.txt").read_text())
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "o"))
    assert code == 0 and "2 images without an annotation (002, 301), 1 annotations without an image (399)" in text
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "s"), "--strict")
    assert code == 2 and "--strict refuses them" in text and not (tmp_path / "s").exists()
    for f in (src / "AnnotationsByMD").rglob("*.txt"):
        f.unlink()
    (src / "AnnotationsByMD/400_senior").rmdir()
    code, text = run_cli("import", "isbi2015", str(src), "--out", str(tmp_path / "none"))
    assert code == 2 and "no AnnotationsByMD/400_senior or 400_junior folder" in text
    assert _leftovers(tmp_path) == []


LABELME_BAD = {
    "not labelme": (lambda p: p.write_text('{"type": "FeatureCollection"}'), "not a LabelMe file"),
    "imageData a number": (lambda p: p.write_text('{"shapes": [], "imagePath": null, "imageData": 7}'),
                           "imageData must be a base64 text, got int"),
    "empty image": (lambda p: (p.parent / "one.png").write_bytes(b""), "one.png is empty (0 bytes)"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), "one.json: LabelMe file is not a regular file"),
}


@pytest.mark.parametrize("case", list(LABELME_BAD))
def test_labelme_bad_input_is_named(tmp_path, case):
    src = tmp_path / "lm"
    _png(src / "one.png")
    path = _labelme(src / "one.json", image_path="one.png")
    LABELME_BAD[case][0](path)
    code, text = run_cli("import", "labelme", str(src), "--out", str(tmp_path / "o"), "--landmarks", "S,N",
                         "--spacing", "0.1")
    assert code == 2 and LABELME_BAD[case][1] in text and "Traceback" not in text, text
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_labelme_without_landmarks_or_any_annotation_is_refused(tmp_path):
    src = tmp_path / "lm"
    _png(src / "one.png")
    _labelme(src / "one.json", image_path="one.png", points=(("X", 1, 2),))
    code, text = run_cli("import", "labelme", str(src), "--out", str(tmp_path / "o"), "--landmarks", "",
                         "--spacing", "0.1")
    assert code == 2 and "--landmarks: give the point labels" in text
    code, text = run_cli("import", "labelme", str(src), "--out", str(tmp_path / "o"), "--landmarks", "S",
                         "--spacing", "0.1", "--skip-bad")
    assert code == 2 and "1 of 1 files have no usable landmarks" in text and not (tmp_path / "o").exists()
    code, text = run_cli("import", "labelme", str(src), "--out", str(src / "o"), "--landmarks", "X",
                         "--spacing", "0.1")
    assert code == 2 and "lies inside the source folder" in text


def test_overwrite_replaces_only_a_folder_whose_import_json_dentcae_wrote(tmp_path, quiet):
    import json as _json
    from dentcae.data.dataset import DataError
    from dentcae.data.importers import import_labelme
    src = tmp_path / "lm"
    src.mkdir()
    import cv2
    import numpy as np
    cv2.imwrite(str(src / "a.png"), np.zeros((40, 30), np.uint8))
    (src / "a.json").write_text(_json.dumps({"shapes": [{"label": "S", "points": [[3, 4]], "shape_type": "point"}],
                                             "imagePath": "a.png"}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "import.json").write_text('{"tool": "someone else"}')
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="no import.json of `dentcae import`"):
        import_labelme(src, other, ["S"], 0.1, overwrite=True, log=quiet)
    assert (other / "keep.txt").read_text() == "mine"
    import_labelme(src, tmp_path / "ds", ["S"], 0.1, log=quiet)
    assert _json.loads((tmp_path / "ds/import.json").read_text())["written_by"] == "dentcae import"
    import_labelme(src, tmp_path / "ds", ["S"], 0.1, overwrite=True, log=quiet)
