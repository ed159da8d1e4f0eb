"""The pseudo-label filters keep exactly what their rules say, on hand-made numbers (no Caffe)."""
import numpy as np
import pytest

from dentcae.unlabelled.choose import DEFAULTS, check_settings, choose
from dentcae.unlabelled.filters import ShapeModel, confidence_rule, on_image, shape_rule, spread_rule
from dentcae.unlabelled.report import accuracy, filter_curves
from dentcae.unlabelled.teachers import Guess


def _shapes(n, seed=0):
    """n labelled shapes of 6 landmarks: one template, small per-landmark noise, each shape moved,
    turned and scaled as a head would be on another X-ray."""
    rng = np.random.default_rng(seed)
    template = np.array([[0, 0], [40, 0], [60, 30], [40, 70], [0, 70], [-15, 35]], float)
    out = []
    for _ in range(n):
        a, s, t = rng.normal(0, 0.1), rng.uniform(0.9, 1.1), rng.normal(0, 20, 2)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(s * (template + rng.normal(0, 1.0, template.shape)) @ rot.T + t)
    return np.stack(out)


def test_on_image_and_confidence():
    points = np.array([[10.0, 10.0], [99.4, 49.0], [99.6, 10.0], [10.0, -0.6], [np.nan, 3.0]])
    assert on_image(points, (50, 100)).tolist() == [True, True, False, False, False]
    assert confidence_rule([0.9, 0.5, 0.49, np.nan], 0.5).tolist() == [True, True, False, False]


def test_spread_keeps_each_landmarks_agreeing_share():
    spread = np.array([[0.1, 5.0], [0.2, 4.0], [0.3, 3.0], [0.4, 2.0], [0.5, np.nan]])
    keep = spread_rule(spread, 0.5)[0]
    # landmark 0: the 2 of 5 smallest (the 'lower' 50 % quantile is 0.3: three kept); landmark 1: of 4 finite
    assert keep[:, 0].tolist() == [True, True, True, False, False]
    assert keep[:, 1].tolist() == [False, False, True, True, False]
    with pytest.raises(ValueError, match="several teachers or test-time views"):
        spread_rule(np.full((3, 2), np.nan), 0.5)


def test_a_similar_shape_fits_and_a_moved_landmark_does_not():
    labelled = _shapes(12)
    model = ShapeModel.fit(labelled)
    a = 0.4
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved_whole = 1.7 * labelled[0] @ rot.T + [300, -50]      # the same shape, turned, moved, 1.7x as big:
    # its residuals, in its own units, are 1.7x as large
    np.testing.assert_allclose(model.residuals(moved_whole), 1.7 * model.residuals(labelled[0]), atol=1e-6)
    candidate = _shapes(1, seed=7)[0]
    candidate[3] += [25.0, -20.0]                              # one landmark far from where shapes put it
    ok, res, limit = shape_rule(candidate[None], labelled, 0.95)
    assert not ok[0, 3] and res[0, 3] > limit[3]
    assert ok[0, [0, 1, 2, 4, 5]].all()                       # the others fit: one bad landmark stands out alone
    assert res[0, 3] == res[0].max()


def test_leave_one_out_thresholds_are_the_labelled_shapes_own_residual_quantiles():
    labelled = _shapes(8)
    limit = ShapeModel.loo_thresholds(labelled, 1.0)
    own = np.stack([ShapeModel.fit(np.delete(labelled, i, 0)).residuals(s) for i, s in enumerate(labelled)])
    np.testing.assert_allclose(limit, own.max(0))
    ok, _, _ = shape_rule(labelled, labelled, 1.0)        # in the model, every labelled shape fits
    assert ok.all()
    with pytest.raises(ValueError, match="at least 4"):
        ShapeModel.loo_thresholds(labelled[:3], 0.9)


def _guesses(n=6):
    labelled = _shapes(10)
    rng = np.random.default_rng(3)
    out = {}
    for i in range(n):
        pts = _shapes(1, seed=20 + i)[0] + 200
        out[f"{i}.png"] = Guess(pts, rng.uniform(0, 1, 6), rng.uniform(0, 2, 6), (600, 600))
    return out, labelled + 200


def test_choose_applies_every_listed_filter_and_nothing_else():
    guesses, labelled = _guesses()
    names = sorted(guesses)
    both = choose(guesses, names, check_settings({**DEFAULTS, "filters": ["spread", "confidence"],
                                                  "min_confidence": 0.3, "spread_keep": 0.5}), None, labelled, [1.0] * 6, 6)
    conf = np.stack([guesses[n].confidence for n in names])
    spread = np.stack([guesses[n].spread_mm for n in names])
    expected = (conf >= 0.3) & spread_rule(spread, 0.5)[0]
    assert np.array_equal(both["keep"], expected)
    assert set(both["passes"]) == {"on_image", "spread", "confidence"}
    for i, n in enumerate(names):
        assert np.isnan(both["kept_points"][n][~expected[i]]).all()
        np.testing.assert_array_equal(both["kept_points"][n][expected[i]], guesses[n].points[expected[i]])
    shape = choose(guesses, names, check_settings({**DEFAULTS, "filters": ["shape"]}), None, labelled, [1.0] * 6, 6)
    assert np.array_equal(shape["keep"], shape["residual_mm"] <= np.array(shape["thresholds"]["shape_mm"])[None])


def test_bad_settings_are_named():
    for bad, word in [({"filters": ["peak"]}, "filters"), ({"filters": []}, "filters"),
                      ({"spread_keep": 0}, "spread_keep"), ({"min_confidence": float("nan")}, "min_confidence"),
                      ({"views": [{"flip": True}]}, r"views\[0\]"), ({"teacher": 1}, "unknown")]:
        with pytest.raises(ValueError, match=word):
            check_settings({**DEFAULTS, **bad})


def test_the_report_measures_only_withheld_labels_and_ranks_by_each_criterion():
    guesses, labelled = _guesses(4)
    names = sorted(guesses)
    chosen = choose(guesses, names, check_settings({**DEFAULTS, "filters": ["confidence"], "min_confidence": 0.5}),
                    None, labelled, [0.5] * 4, 6)
    truth = {names[0]: guesses[names[0]].points + [2.0, 0.0]}        # 2 px = 1 mm off, one image only
    acc = accuracy(chosen, truth, [f"l{k}" for k in range(6)])
    assert acc["images"] == 1 and acc["kept_landmarks"] + acc["rejected_landmarks"] == 6
    assert acc["kept_mre_mm"] in (None, pytest.approx(1.0))
    curves = filter_curves(chosen, truth)
    assert set(curves) == {"confidence", "spread", "shape residual"}
    assert all(c["landmarks"] == 6 and np.allclose(c["kept_mre_mm"], 1.0) for c in curves.values())
