"""Dataset format, synthetic phantom, paper-faithful preprocessing, bad input."""
import csv
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml

from conftest import run_cli, tiny
from dentcae.data.dataset import DataError, load_dataset
from dentcae.data.phantom import write_phantom
from dentcae.data.prepare import SPLITS, prepare
from dentcae.data.geometry import to_normalised, to_pixels
from dentcae.data.splits import grouped_split


def _files(root):
    return {p.name: p.read_bytes() for p in sorted(Path(root).iterdir())}


def test_synth_is_deterministic_per_seed(tmp_path):
    a = _files(write_phantom(tmp_path / "a", images=4, annotated=2, seed=7))
    b = _files(write_phantom(tmp_path / "b", images=4, annotated=2, seed=7))
    c = _files(write_phantom(tmp_path / "c", images=4, annotated=2, seed=8))
    assert a == b
    assert a.keys() == c.keys() and a["phantom_0000.png"] != c["phantom_0000.png"]


def test_synth_cli_writes_a_valid_dataset(tmp_path):
    code, out = run_cli("synth", "--out", str(tmp_path / "p"), "--images", "5", "--annotated", "3", "--seed", "1")
    assert code == 0, out
    ds = load_dataset(tmp_path / "p")
    assert len(ds.images) == 5 and sum(r.annotated for r in ds.images) == 3
    assert ds.layout == "bilateral" and ds.synthetic and ds.sample_landmarks == 4
    assert "SYNTHETIC" in out


def test_mirror_mapping_matches_hand_computation():
    # A 200-px wide image: the right half is x in [100, 200). Pixel centres are integers, so a point
    # at x = 150 sits at u = 50 in the crop, at u' = 99 - 50 = 49 after the flip, and at
    # (49 + 0.5) / 100 = 0.495 normalised; after resizing to 224 that is pixel 0.495 * 224 - 0.5.
    pts = np.array([[150.0, 30.0], [199.0, 0.0], [100.0, 79.0]])
    lab = to_normalised(pts, x0=100, y0=0, w=100, h=80, flipped=True)
    np.testing.assert_allclose(lab[0], [0.495, 30.5 / 80])
    np.testing.assert_allclose(lab[1], [0.005, 0.5 / 80])   # the right edge lands at the left edge
    np.testing.assert_allclose(lab[2], [0.995, 79.5 / 80])
    np.testing.assert_allclose(lab[0, 0] * 224 - 0.5, 110.38)
    np.testing.assert_allclose(to_pixels(lab, 100, 0, 100, 80, True), pts, atol=1e-9)


def test_mirrored_half_pixels_and_labels_agree(phantom, tmp_path):
    """A bright dot put on a right-side landmark shows up where the stored label says."""
    root = tmp_path / "dot"
    shutil.copytree(phantom, root)
    ds = load_dataset(root)
    rec = next(r for r in ds.images if r.annotated)
    img = cv2.imread(str(rec.path), cv2.IMREAD_GRAYSCALE)
    img[:] = 0
    x, y = np.round(rec.landmarks[ds.right[0]]).astype(int)
    cv2.circle(img, (int(x), int(y)), 4, 255, -1)
    cv2.imwrite(str(rec.path), img)
    rows = [r for r in csv.reader((root / "landmarks.csv").open())]
    for r in rows[1:]:
        if r[0] == rec.name:
            r[1 + 2 * ds.right[0]], r[2 + 2 * ds.right[0]] = str(x), str(y)
    with (root / "landmarks.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    cfg = tiny(tmp_path, root)
    prep = prepare(cfg)
    sample = next(s for s in prep.samples() if s["image"] == rec.name and s["side"] == "right")
    split = next(s for s in SPLITS if int(sample[s]) and s.startswith("reg"))
    pos = [s["index"] for s in prep.samples() if int(s[split])].index(sample["index"])
    with h5py.File(prep.h5(split)) as f:
        plane, label = f["data"][pos, 0], f["label"][pos]
    size = plane.shape[0]
    py, px = np.unravel_index(np.argmax(plane), plane.shape)
    assert abs(label[0] * size - 0.5 - px) <= 2 and abs(label[1] * size - 0.5 - py) <= 2


def test_grouped_split_keeps_groups_together():
    groups = [f"g{i // 3}" for i in range(30)] + ["big"] * 7
    held = grouped_split(groups, 0.2, seed=0)
    test = [g for g in groups if g in held]
    assert abs(len(test) - 0.2 * len(groups)) <= 7
    folds = [grouped_split(groups, 0, seed=1, folds=5, fold=f) for f in range(5)]
    assert set().union(*folds) == set(groups)
    assert sum(len(f) for f in folds) == len(set(groups))   # each group in exactly one fold


def test_prepare_splits_shapes_and_ranges(phantom, tmp_path):
    prep = prepare(tiny(tmp_path, phantom))
    rows = prep.samples()
    assert len(rows) == 24
    by_image = {}
    for r in rows:
        by_image.setdefault(r["image"], set()).add((r["cae_test"], r["reg_test"]))
        assert int(r["cae_train"]) + int(r["cae_test"]) == 1
        assert int(r["reg_train"]) + int(r["reg_test"]) == int(r["annotated"])
    assert all(len(v) == 1 for v in by_image.values())   # both halves of an image share every split
    for split in SPLITS:
        with h5py.File(prep.h5(split)) as f:
            data, label = f["data"][...], f["label"][...]
        assert data.dtype == np.float32 and data.shape[1:] == (3, 224, 224)
        assert data.shape[0] == prep.count(split) == label.shape[0]
        np.testing.assert_allclose(data[:, 0] + 104.00698793, data[:, 1] + 116.66876762, atol=1e-4)
        assert -125 < data.min() and data.max() < 152
        if split.startswith("reg"):
            assert label.shape[1] == 8 and 0 <= label.min() and label.max() <= 1
        assert Path(prep.source(split).read_text().strip()) == prep.h5(split).resolve()


def test_prepare_is_cached(phantom, tmp_path):
    cfg = tiny(tmp_path, phantom)
    first = prepare(cfg)
    stamp = first.h5("cae_train").stat().st_mtime_ns
    assert prepare(cfg).h5("cae_train").stat().st_mtime_ns == stamp
    cfg["prepare"]["split_seed"] = 5
    assert prepare(cfg).dir != first.dir


def test_a_cache_hit_hashes_no_image_and_a_changed_image_is_noticed(phantom, tmp_path, monkeypatch):
    import cv2
    import dentcae.data.prepare as prepare_module
    root = tmp_path / "data"
    shutil.copytree(phantom, root)
    cfg = tiny(tmp_path, root)
    first = prepare(cfg)

    def no_hash(path):
        raise AssertionError(f"a cache hit hashed {path}")
    real_read = Path.read_bytes

    def no_image_read(path):
        assert path.suffix != ".png", f"a cache hit read the image {path}"
        return real_read(path)
    monkeypatch.setattr(prepare_module, "file_sha256", no_hash)
    monkeypatch.setattr(Path, "read_bytes", no_image_read)
    assert prepare(cfg).dir == first.dir                          # the hit: stat calls and a key
    monkeypatch.undo()
    image = sorted(root.glob("*.png"))[0]
    grey = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    grey[:20, :20] = 255 - grey[:20, :20]                          # the same file name, other pixels
    cv2.imwrite(str(image), grey)
    changed = prepare(cfg)
    assert changed.dir != first.dir
    with h5py.File(first.h5("cae_train"), "r") as a, h5py.File(changed.h5("cae_train"), "r") as b:
        assert a["data"].shape == b["data"].shape and not np.array_equal(a["data"][...], b["data"][...]) \
            or image.name not in {r["image"] for r in first.samples() if int(r["cae_train"])}


def test_kfold_option(phantom, tmp_path):
    tests, annotated = [], set()
    for fold in range(3):
        samples = prepare(tiny(tmp_path, phantom, prepare={"folds": 3, "fold": fold})).samples()
        tests.append({r["image"] for r in samples if int(r["reg_test"])})
        annotated |= {r["image"] for r in samples if int(r["annotated"])}
    for a in range(3):
        assert tests[a], f"fold {a} tests nothing"
        for b in range(a + 1, 3):
            assert not (tests[a] & tests[b]), (a, b)      # every pair of folds, 0 and 2 included
    assert set().union(*tests) == annotated                # together the folds test every image


# ---- bad input: each stops naming the file and row or key, and leaves nothing behind ----

def _broken(phantom, tmp_path, edit):
    root = tmp_path / "bad"
    shutil.copytree(phantom, root)
    edit(root)
    return root


def _csv_edit(fn):
    def edit(root):
        rows = list(csv.reader((root / "landmarks.csv").open()))
        fn(rows)
        with (root / "landmarks.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return edit


def _yaml_edit(fn):
    def edit(root):
        meta = yaml.safe_load((root / "dataset.yaml").read_text())
        fn(meta)
        (root / "dataset.yaml").write_text(yaml.safe_dump(meta))
    return edit


def _annotated(root, k=0):
    return list(csv.reader((root / "landmarks.csv").open()))[1 + k][0]


def _truncate(root):
    p = root / _annotated(root)
    p.write_bytes(p.read_bytes()[:2000])


def _garbage(root):
    (root / "phantom_0000.png").write_bytes(b"not an image at all" * 10)


BAD = {
    "missing image": (_csv_edit(lambda r: r[1].__setitem__(0, "nowhere.png")), r"row 2: image 'nowhere.png' is not in"),
    "unreadable image": (_garbage, r"phantom_0000.png: truncated PNG|phantom_0000.png: cannot decode"),
    "truncated image": (_truncate, r"truncated PNG"),
    "wrong column count": (_csv_edit(lambda r: r[2].pop()), r"landmarks.csv: row 3: has 16 columns, the header has 17"),
    "non-numeric coordinate": (_csv_edit(lambda r: r[1].__setitem__(3, "12,5mm")), r"row 2: x2 is not a number: '12,5mm'"),
    "out-of-image coordinate": (_csv_edit(lambda r: r[1].__setitem__(2, "9999")), r"row 2: landmark 1 of .* lies outside the 512x320 image"),
    "undeclared landmark": (_csv_edit(lambda r: [row.extend(["1", "2"]) for row in r] and r[0].__setitem__(-2, "x9") or r[0].__setitem__(-1, "y9")),
                            r"row 1: column 'x9' names a landmark that dataset.yaml does not declare"),
    "non-positive spacing": (_yaml_edit(lambda m: m.__setitem__("spacing_mm", 0)), r"dataset.yaml: key 'spacing_mm' must be a positive number"),
    "unknown yaml key": (_yaml_edit(lambda m: m.__setitem__("pixel_size", 0.1)), r"dataset.yaml: unknown key 'pixel_size'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_named_and_leaves_no_output(case, phantom, tmp_path):
    edit, message = BAD[case]
    root = _broken(phantom, tmp_path, edit)
    cfg = tiny(tmp_path, root)
    with pytest.raises(DataError, match=message):
        prepare(cfg)
    cache = Path(cfg["prepare"]["cache_dir"])
    assert not cache.exists() or not any(cache.iterdir())


def test_bad_input_through_the_cli(phantom, tmp_path):
    root = _broken(phantom, tmp_path, BAD["non-numeric coordinate"][0])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": {"root": str(root), "synth": None},
                                   "prepare": {"cache_dir": str(tmp_path / "cache")}}))
    code, out = run_cli("prepare", "--config", str(cfg))
    assert code == 2 and "row 2: x2 is not a number" in out and "Traceback" not in out


def test_skip_bad_reports_what_was_skipped(phantom, tmp_path, quiet):
    root = _broken(phantom, tmp_path, _truncate)
    cfg = tiny(tmp_path, root, dataset={"skip_bad": True})
    prep = prepare(cfg, log=quiet)
    assert [s["image"] for s in prep.meta["skipped"]] == [_annotated(root)]
    assert "truncated PNG" in prep.meta["skipped"][0]["error"]
    assert len(prep.samples()) == 22


def test_sixteen_bit_and_rgb_images_read_alike(tmp_path):
    from dentcae.data.dataset import read_image
    g8 = np.arange(256, dtype=np.uint8).reshape(16, 16)      # at least MIN_SIDE px a side
    cv2.imwrite(str(tmp_path / "g8.png"), g8)
    cv2.imwrite(str(tmp_path / "g16.tif"), g8.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb.bmp"), np.dstack([g8] * 3))
    a, b, c = (read_image(tmp_path / n) for n in ("g8.png", "g16.tif", "rgb.bmp"))
    np.testing.assert_allclose(a, b, atol=1e-3)
    np.testing.assert_allclose(a, c, atol=1e-3)


def test_dataset_yaml_reads_numbers_as_configs_do(phantom, tmp_path):
    """One YAML reader for configs and dataset.yaml: `25e-2` is 0.25 in both."""
    root = tmp_path / "sci"
    shutil.copytree(phantom, root)
    text = (root / "dataset.yaml").read_text()
    (root / "dataset.yaml").write_text(text.replace("spacing_mm: 0.25", "spacing_mm: 25e-2"))
    assert "25e-2" in (root / "dataset.yaml").read_text()
    assert {r.spacing_mm for r in load_dataset(root).images} == {0.25}
