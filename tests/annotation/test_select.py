"""`dentcae select`: which images to label first. Never a test image nor half a duplicate group,
deterministic and nested, and the same labelled set when a table trains on its file or its rule.
No Caffe (image descriptors; the encoder's features: tests/deploy/test_predict.py)."""
import csv

import cv2
import numpy as np
import pytest
import yaml

from conftest import run_cli, tiny
from dentcae.annotation.select import select_images
from dentcae.data.dataset import DataError
from dentcae.data.prepare import prepare
from dentcae.data.selection import priority_order


def _dataset(tmp, n=14):
    """n X-ray-like images: 000-001 pinned test, 002 shares a group with test image 001, 003 and 004
    are one radiograph (group g34), 005-006 labelled, the rest unlabelled."""
    root = tmp / "ds"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [["image", "x1", "y1", "x2", "y2", "group", "split"]]
    for i in range(n):
        img = rng.normal(90 + 10 * (i % 5), 20, (60, 50)).clip(0, 255)
        cv2.circle(img, (int(10 + 3 * i), 30), 6 + i % 4, 230, -1)
        cv2.imwrite(str(root / f"images/{i:03d}.png"), img.astype(np.uint8))
        labelled = i in (0, 1, 5, 6)
        group = {1: "g12", 2: "g12", 3: "g34", 4: "g34"}.get(i, f"{i:03d}")
        rows.append([f"images/{i:03d}.png", *(["10", "20", "30", "40"] if labelled else [""] * 4), group,
                     "test1" if i < 2 else ""])
    with open(root / "landmarks.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"name": "tiny", "landmarks": ["a", "b"], "spacing_mm": 0.1,
                                                      "layout": "whole"}))
    return root


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_never_a_test_image_nor_half_a_group_and_labelled_images_count_as_chosen(tmp_path):
    root = _dataset(tmp_path)
    report = select_images(root, 4, tmp_path / "sel.csv")
    rows = _rows(tmp_path / "sel.csv")
    listed = {r["image"] for r in rows}
    assert not listed & {"images/000.png", "images/001.png", "images/002.png"}     # test, and its group
    assert not listed & {"images/005.png", "images/006.png"}                      # already labelled
    assert report["candidates"] == len(listed) == 9 and report["labelled"] == 2
    ranks = {r["image"]: r["rank"] for r in rows}
    assert ranks["images/003.png"] == ranks["images/004.png"]                     # one group, one rank
    chosen = [r for r in rows if r["chosen"] == "1"]
    assert len(chosen) <= 4 and {r["group"] for r in chosen} == {r["group"] for r in rows if int(r["rank"]) <= len({c["group"] for c in chosen})}
    assert (tmp_path / "sel.png").stat().st_size > 0


def test_deterministic_and_nested(tmp_path):
    root = _dataset(tmp_path)
    select_images(root, 3, tmp_path / "a.csv", ignore_annotations=True)
    select_images(root, 7, tmp_path / "b.csv", ignore_annotations=True)
    select_images(root, 7, tmp_path / "a.csv", ignore_annotations=True, overwrite=True)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    order = [r["image"] for r in _rows(tmp_path / "b.csv")]
    assert "images/005.png" in order                    # --ignore-annotations: labelled ones are candidates
    x = np.random.default_rng(1).normal(size=(9, 4))
    first = priority_order({f"g{i}": v for i, v in enumerate(x)})
    assert first[0] == f"g{np.argmin(np.linalg.norm(x[:, None] - x[None], axis=2).sum(1))}"   # the medoid
    assert priority_order({f"g{i}": v for i, v in enumerate(x)}, already={first[0]}) == first[1:]


def test_outputs_inside_the_dataset_or_over_a_foreign_file_are_refused(tmp_path):
    root = _dataset(tmp_path)
    with pytest.raises(DataError, match="lies inside the dataset"):
        select_images(root, 3, root / "sel.csv")
    (tmp_path / "notes.csv").write_text("mine\n")
    with pytest.raises(DataError, match="not a selection `dentcae select` wrote"):
        select_images(root, 3, tmp_path / "notes.csv", overwrite=True)
    assert (tmp_path / "notes.csv").read_text() == "mine\n"
    rc, out = run_cli("select", str(root), "--budget", "0", "--out", str(tmp_path / "s.csv"))
    assert rc == 2 and "--budget must be a whole number >= 1" in out
    rc, out = run_cli("select", str(root), "--budget", "2", "--out", str(tmp_path / "s.csv"), "--features",
                      str(tmp_path / "no_run"))
    assert rc == 2 and "--features" in out and "no_run: not found" in out and not (tmp_path / "s.csv").exists()
    rc, out = run_cli("select", str(root), "--budget", "50", "--out", str(tmp_path / "new/s.csv"))
    assert rc == 0 and "--budget 50 is more than the 9 candidates: every one is chosen" in out
    assert sum(r["chosen"] == "1" for r in _rows(tmp_path / "new/s.csv")) == 9 and (tmp_path / "new/s.png").is_file()


def test_a_table_trains_on_the_selection_file_or_rule(tmp_path, phantom, quiet):
    base = tiny(tmp_path, phantom, name="s_base")
    select_images(phantom, 4, tmp_path / "sel.csv", cfg=base, ignore_annotations=True)
    rows = _rows(tmp_path / "sel.csv")
    order = list(dict.fromkeys(r["group"] for r in rows))
    tested = {s["group"] for s in prepare(base, log=quiet).samples() if int(s["reg_test"])}
    assert len(rows) == 8 - len(tested) and not tested & set(order)     # annotated, not tested
    for selection in (str(tmp_path / "sel.csv"), "kmedoids"):
        cfg = tiny(tmp_path, phantom, name=f"s_{selection[-3:]}", dataset={"label_budget": 3, "label_selection": selection})
        labelled = {s["group"] for s in prepare(cfg, log=quiet).samples() if int(s["reg_train"])}
        assert labelled == set(order[:3]), selection
    cfg = tiny(tmp_path, phantom, name="s_bad", dataset={"label_budget": 3, "label_selection": str(tmp_path / "no.csv")})
    with pytest.raises(DataError, match="cannot read"):
        prepare(cfg, log=quiet)


@pytest.mark.slow
def test_select_with_a_pretrainings_encoder_needs_no_label(phantom, clean_tmp, quiet):
    import shutil
    from dentcae.data.dataset import load_dataset, read_image
    from dentcae.inference.features import encoder_features, pretraining_encoder
    from dentcae.train.loop import train
    from dentcae.train.runfiles import run_dir
    cae = tiny(clean_tmp, phantom, stage="pretrain", name="sel_cae", prepare={"input_size": 96})
    train(cae, log=quiet)
    out = clean_tmp / "sel.csv"
    rc, text = run_cli("select", str(phantom), "--budget", "3", "--out", str(out), "--features", str(run_dir(cae)),
                       "--ignore-annotations")
    assert rc == 0, text
    rows = _rows(out)
    assert sum(r["chosen"] == "1" for r in rows) == 3 and out.with_suffix(".png").is_file()
    grey = read_image(load_dataset(phantom).images[0].path)
    a, b = encoder_features(pretraining_encoder(run_dir(cae)), [grey, grey])
    assert a.shape[0] > 1 and abs(np.linalg.norm(a) - 1) < 1e-5 and np.array_equal(a, b)
    unfinished = clean_tmp / "unfinished"
    shutil.copytree(run_dir(cae), unfinished, ignore=shutil.ignore_patterns("final.caffemodel"))
    rc, text = run_cli("select", str(phantom), "--budget", "3", "--out", str(clean_tmp / "b.csv"),
                       "--features", str(unfinished), "--ignore-annotations")
    assert rc != 0 and "has not finished" in text and str(unfinished) in text
