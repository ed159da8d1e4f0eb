"""Consistency training's targets: the teacher's landmarks carried into the strong view by its known
transform (a shift moves the target peak by exactly that shift), unconfident or out-of-view
landmarks masked; and a real (tiny) run that adds the unlabelled images' gradients."""
import csv
import json

import numpy as np
import pytest

from conftest import tiny
from dentcae.codecs import heatmap as codec
from dentcae.heads.heatmap.consistency import point_targets, teacher_points, unlabelled_rows
from dentcae.schema import ConfigError
from dentcae.views import labels_to_view, view_matrix

SIZE, SIGMA = 96, 2.0


def _teacher_heatmaps(points, height=1.0):
    return height * codec.encode(np.asarray(points, float)[None], SIZE, SIGMA)


def view_targets(heatmaps, view, size, sigma, min_confidence):
    """The hook's path from a teacher whose output is `heatmaps` to the targets in one view."""
    points, confidence = teacher_points(lambda x: heatmaps, np.zeros((len(heatmaps), size, size), np.float32),
                                        [], size, [0, 0, 0])
    return point_targets(points, confidence, [view_matrix(view, size)] * len(points), size, sigma, min_confidence)


def test_a_known_shift_moves_the_target_peak_by_exactly_that_shift():
    points = np.array([[0.3, 0.4], [0.6, 0.55], [0.52, 0.7]])
    hms = _teacher_heatmaps(points)
    targets, mask = view_targets(hms, {"shift": [8, -4]}, SIZE, SIGMA, 0.3)
    assert mask.tolist() == [[1, 1, 1]]
    before, after = codec.decode(hms, SIZE)[0], codec.decode(targets, SIZE)[0]
    np.testing.assert_allclose((after - before) * SIZE, [[8, -4]] * 3, atol=0.05)     # input pixels


def test_a_turned_view_carries_the_landmarks_through_its_matrix():
    points = np.array([[0.35, 0.45], [0.6, 0.5]])
    view = {"rotate": 20, "scale": 1.1, "shift": [3, 2]}
    targets, mask = view_targets(_teacher_heatmaps(points), view, SIZE, SIGMA, 0.3)
    expected = labels_to_view(codec.decode(_teacher_heatmaps(points), SIZE)[0], view_matrix(view, SIZE), SIZE)
    np.testing.assert_allclose(codec.decode(targets, SIZE)[0], expected, atol=0.05 / SIZE)
    assert mask.all()


def test_unconfident_and_out_of_view_landmarks_give_no_target():
    points = np.array([[0.3, 0.4], [0.95, 0.5]])
    weak = view_targets(_teacher_heatmaps(points, 0.2), {}, SIZE, SIGMA, 0.3)
    assert weak[1].tolist() == [[0, 0]] and np.all(weak[0] == 0)
    out = view_targets(_teacher_heatmaps(points), {"shift": [10, 0]}, SIZE, SIGMA, 0.3)
    assert out[1].tolist() == [[1, 0]] and np.all(out[0][0, 1] == 0)          # moved off the input


def _blob_teacher(x):
    """A perfect teacher for one landmark: a heatmap at the centroid of the input's brightest 5x5 patch."""
    out = []
    for img in x[:, 0]:
        y, x0 = np.unravel_index(int(np.argmax(img)), img.shape)
        ys, xs = np.mgrid[y - 2:y + 3, x0 - 2:x0 + 3]
        w = np.clip(img[ys, xs], 0, None)
        centre = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
        out.append(codec.encode(((centre + 0.5) / SIZE)[None, None], SIZE, SIGMA)[0])
    return np.stack(out)


def test_teacher_views_map_each_answer_back_to_the_image():
    where = np.array([[40.0, 50.0], [55.0, 38.0]])                        # input pixels, one blob per image
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    grey = np.stack([200 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / 8.0) for u, v in where]).astype(np.float32)
    plain, _ = teacher_points(_blob_teacher, grey, [], SIZE, [0, 0, 0])
    viewed, height = teacher_points(_blob_teacher, grey, [{"shift": [6, -3]}, {"rotate": 8, "scale": 1.1}],
                                    SIZE, [0, 0, 0])
    np.testing.assert_allclose(viewed, plain, atol=0.3 / SIZE)           # the views agree once mapped back
    np.testing.assert_allclose(plain[:, 0] * SIZE - 0.5, where, atol=0.3)
    assert height.shape == (2, 1) and np.all(height > 0.5)


def test_each_image_carries_its_own_view():
    points = np.array([[[0.4, 0.5]], [[0.4, 0.5]]])
    shifts = [[5, 0], [0, -7]]
    targets, mask = point_targets(points, np.ones((2, 1)), [view_matrix({"shift": s}, SIZE) for s in shifts],
                                  SIZE, SIGMA, 0.3)
    moved = (codec.decode(targets, SIZE) - points) * SIZE
    np.testing.assert_allclose(moved[:, 0], shifts, atol=0.05)
    assert mask.tolist() == [[1], [1]]


class _Prepared:
    meta = {"leaks": {"images": ["leak.png"]}}

    def samples(self):
        row = {"reg_train": "1", "reg_test": "0", "pin": "train"}
        return [{**row, "image": "real.png"}, {**row, "image": "pseudo.png"}, {**row, "image": "leak.png"},
                {**row, "image": "bare.png", "reg_train": "0", "pin": ""},
                {**row, "image": "test.png", "reg_train": "0", "reg_test": "1", "pin": "test"}]


def test_pseudo_labelled_images_get_consistency_targets_and_real_or_test_images_never(tmp_path):
    (tmp_path / "pseudo.json").write_text(json.dumps({"candidates": ["pseudo.png", "leak.png"]}))
    rows = unlabelled_rows({"dataset": {"root": str(tmp_path)}}, _Prepared())
    assert [r["image"] for r in rows] == ["pseudo.png", "bare.png"]          # a leaked image never
    plain = unlabelled_rows({"dataset": {"root": str(tmp_path / "none")}}, _Prepared())
    assert [r["image"] for r in plain] == ["bare.png"]                         # no pseudo.json: labels are real
    (tmp_path / "pseudo.json").write_text("{\"rounds\": 1}")
    with pytest.raises(ConfigError, match=r"pseudo.json: not a pseudo.json .*'candidates'"):
        unlabelled_rows({"dataset": {"root": str(tmp_path)}}, _Prepared())


@pytest.mark.slow
def test_a_run_with_consistency_learns_from_the_unlabelled_images(phantom, clean_tmp, quiet):
    from dentcae.nets.transfer import read_caffemodel
    from dentcae.train.loop import train
    from dentcae.train.runfiles import run_dir

    def run(name, weight, **more):
        cfg = tiny(clean_tmp, phantom, name=name, prepare={"input_size": 96, "resize": "pad"},
                   dataset={"label_budget": 3}, solver={"max_iter": 3, "batch_size": 4},
                   model={"head": "heatmap", "head_width": 16, "partial_labels": True,
                          "consistency": {"weight": weight, "min_confidence": 0.0, **more}})
        train(cfg, log=quiet)
        return run_dir(cfg)
    plain, again, taught = run("plain", 0.0), run("again", 0.0), run("taught", 1.0)
    viewed = run("viewed", 1.0, view_per="image", teacher_views=[{"shift": [3, 0]}])
    summary = json.loads((taught / "training.json").read_text())
    assert np.isfinite(summary["hook_loss_last_100"]) and summary["hook_loss_last_100"] > 0
    assert 0 < summary["hook_targets_kept_last_100"] <= 1          # min_confidence 0: the in-view landmarks
    assert "hook_loss_last_100" not in json.loads((plain / "training.json").read_text())
    first = [next(r for r in csv.DictReader(open(x / "loss.csv")) if r["phase"] == "train") for x in (plain, taught)]
    assert float(first[0]["loss"]) == float(first[1]["loss"]) > 0      # loss.csv logs the labelled batch's loss
    a, b, c, d = (read_caffemodel(r / "final.caffemodel") for r in (plain, again, taught, viewed))
    assert all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k]))          # a run repeats exactly...
    assert any(not np.array_equal(x, y) for k in a for x, y in zip(a[k], c[k]))      # ...the unlabelled gradients count
    assert any(not np.array_equal(x, y) for k in c for x, y in zip(c[k], d[k]))      # and so do the views
