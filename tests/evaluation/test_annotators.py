"""Scoring against several annotators and per test set, checked by hand on a tiny set."""
from pathlib import Path

import numpy as np
import pytest

from dentcae.data.dataset import Dataset
from dentcae.evaluation.annotators import protocol_lines, protocols


def _tiny():
    """Two images, one landmark each, 0.5 mm/px; senior and junior disagree by 2 px on image b."""
    ds = Dataset(Path("."), "tiny", ["p"], "whole",
                 annotations={"senior": {"a.png": np.array([[10.0, 10.0]]), "b.png": np.array([[20.0, 20.0]])},
                              "junior": {"a.png": np.array([[10.0, 10.0]]), "b.png": np.array([[22.0, 20.0]])}})
    samples = [{"image": "a.png", "side": "whole", "spacing_mm": "0.5", "pin": "test1"},
               {"image": "b.png", "side": "whole", "spacing_mm": "0.5", "pin": "test2"}]
    pred = np.array([[[13.0, 14.0]], [[21.0, 20.0]]])      # 5 px from both on a; 1 px from each on b
    return ds, samples, pred


def test_scores_against_each_annotator_their_mean_and_each_other_match_a_hand_computation():
    ds, samples, pred = _tiny()
    got = protocols(pred, samples, ds)
    assert sorted(got) == ["all", "test1", "test2"]
    a = got["all"]["against"]
    assert a["senior"]["mre_mm"] == pytest.approx((2.5 + 0.5) / 2)          # 5 px and 1 px at 0.5 mm/px
    assert a["junior"]["mre_mm"] == pytest.approx((2.5 + 0.5) / 2)
    assert a["mean"]["mre_mm"] == pytest.approx((2.5 + 0.0) / 2)            # the midpoint of b is (21, 20)
    assert a["mean"]["sdr"]["2mm"] == 0.5 and a["senior"]["median_mm"] == pytest.approx(1.5)
    assert got["test2"]["inter_observer"]["senior_vs_junior"]["mre_mm"] == pytest.approx(1.0)   # 2 px
    assert got["test1"]["inter_observer"]["senior_vs_junior"]["mre_mm"] == 0.0
    assert got["test1"]["n_samples"] == 1 and got["test1"]["against"]["mean"]["mre_mm"] == pytest.approx(2.5)
    text = protocol_lines({"arm": got})
    assert "| arm | test2 | mean | 1 | 0.00 |" in text and "| inter-observer | test2 | senior vs junior | 1 | 1.00 |" in text


def test_an_image_an_annotator_did_not_mark_is_left_out_of_every_score_of_that_protocol():
    ds, samples, pred = _tiny()
    del ds.annotations["junior"]["b.png"]
    got = protocols(pred, samples, ds)
    assert got["all"]["n_samples"] == 1 and got["all"]["against"]["senior"]["mre_mm"] == pytest.approx(2.5)
    assert got["test2"] == {"n_samples": 0, "against": {}, "inter_observer": {}}
    assert protocols(pred, samples, Dataset(Path("."), "one", ["p"], "whole")) == {}
