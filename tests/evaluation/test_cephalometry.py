"""The 8 ISBI 2015 cephalometric measurements on hand-made landmark sets with known angles and classes."""
import numpy as np
import pytest

from dentcae.evaluation import cephalometry as ceph

NAMES = ["sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton", "gnathion",
         "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip", "lower_lip", "subnasale",
         "soft_tissue_pogonion", "posterior_nasal_spine", "anterior_nasal_spine", "articulare"]


def face(fma=20.0, pp_tilt=0.0, overjet=(3.0, 0.0), a=(90, 60), b=(90, 120)):
    """A right-facing profile in image pixels (y down): sella-nasion and Frankfort horizontal, the
    facial line (nasion-pogonion) vertical, the mandibular plane descending anteriorly at `fma`
    degrees, the palatal plane tipped up anteriorly by `pp_tilt` degrees; upper incisor `overjet`
    pixels (dx, dy) from the lower one."""
    p = {n: np.array([50.0, 50.0]) for n in NAMES}
    p.update(sella=np.array([0.0, 0.0]), nasion=np.array([100.0, 0.0]), porion=np.array([-20.0, 20.0]),
             orbitale=np.array([80.0, 20.0]), subspinale=np.array(a, float), supramentale=np.array(b, float),
             pogonion=np.array([100.0, 150.0]), gonion=np.array([0.0, 100.0]),
             posterior_nasal_spine=np.array([10.0, 50.0]))
    t = np.radians(fma)
    p["menton"] = p["gonion"] + 100 * np.array([np.cos(t), np.sin(t)])
    t = np.radians(pp_tilt)
    p["anterior_nasal_spine"] = p["posterior_nasal_spine"] + 80 * np.array([np.cos(t), -np.sin(t)])
    p["lower_incisal_incision"] = np.array([95.0, 90.0])
    p["upper_incisal_incision"] = p["lower_incisal_incision"] + np.array(overjet)
    return np.array([p[n] for n in NAMES])


def angle(u, v):
    return np.degrees(np.arccos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))


def test_angles_and_ratios_of_a_hand_made_profile():
    pts = face(fma=20.0)
    m = ceph.measure(pts, NAMES, spacing_mm=0.5)
    sna, snb = angle([-100, 0], [-10, 60]), angle([-100, 0], [-10, 120])     # at nasion, towards sella and A / B
    assert m["SNA"] == pytest.approx(sna) and m["SNB"] == pytest.approx(snb) and m["ANB"] == pytest.approx(sna - snb)
    assert m["FMA"] == pytest.approx(20.0)                  # Frankfort horizontal, mandibular plane at 20 degrees
    assert m["ODI"] == pytest.approx(90.0 - 20.0)           # AB vertical: AB-MP 70, palatal plane parallel to FH
    assert m["APDI"] == pytest.approx(90.0)                 # facial angle 90, AB parallel to the facial line
    t = np.radians(20)                                      # S-Go 100 px; N-Me to the menton placed above
    assert m["FHI"] == pytest.approx(100.0 / np.hypot(100 - 100 * np.cos(t), 100 + 100 * np.sin(t)))
    assert m["MW"] == pytest.approx(3.0 * 0.5)              # incisal tips 3 px apart, upper ahead, 0.5 mm/px
    c = ceph.classify(m)
    assert c["ANB"][0] == 3 and c["SNA"][0] == 1 and c["SNB"][0] == 3       # -4.7 deg: class III; 80.5 normal; 85.2
    assert c["FMA"] == (3, "low angle tendency") and c["ODI"] == (1, "normal") and c["APDI"][0] == 3
    assert c["FHI"] == (1, "normal")                        # 0.744
    assert c["MW"] == (2, "edge to edge")                   # 1.5 mm: below the 2 mm of a normal overjet


def test_palatal_plane_tip_enters_odi_and_apdi_with_opposite_signs():
    flat, tipped = (ceph.measure(face(pp_tilt=t), NAMES) for t in (0.0, 5.0))
    assert tipped["ODI"] == pytest.approx(flat["ODI"] - 5.0)      # tipped up anteriorly: open-bite tendency
    assert tipped["APDI"] == pytest.approx(flat["APDI"] + 5.0)
    b_forward = ceph.measure(face(b=(110, 120)), NAMES)           # B ahead of the facial line, A behind it
    assert b_forward["APDI"] > flat["APDI"] + 10                  # towards class III


def test_a_mirrored_xray_measures_the_same_and_mw_has_a_sign():
    pts = face(fma=33.0, overjet=(-4.0, 1.0))
    mirrored = pts * np.array([-1.0, 1.0]) + np.array([500.0, 0.0])
    a, b = ceph.measure(pts, NAMES, 0.1), ceph.measure(mirrored, NAMES, 0.1)
    for k in ceph.ORDER:
        assert a[k] == pytest.approx(b[k])
    assert a["MW"] == pytest.approx(-np.hypot(4.0, 1.0) * 0.1)     # lower incisor ahead: a cross bite
    assert ceph.classify(a)["MW"] == (3, "anterior cross bite") and ceph.classify(a)["FMA"][0] == 2


def test_class_bounds_and_missing_spacing_and_landmarks():
    assert ceph.classify({"ANB": 3.2})["ANB"][0] == 1 and ceph.classify({"ANB": 3.19})["ANB"][0] == 3
    assert ceph.classify({"ANB": 5.71})["ANB"][0] == 2 and ceph.classify({"MW": 4.6})["MW"][0] == 4
    assert ceph.classify({"FHI": 0.7})["FHI"] == (1, "normal")
    assert ceph.measure(face(), NAMES)["MW"] is None and ceph.classify({"MW": None})["MW"] is None
    assert ceph.has_landmarks(NAMES) and not ceph.has_landmarks(NAMES[:5])
    with pytest.raises(KeyError, match="gonion"):
        ceph.measure(face()[:9], NAMES[:9])


def test_agreement_of_identical_and_shifted_landmarks():
    pts = np.stack([face(fma=f) for f in (20.0, 29.0, 35.0)])
    same = ceph.agreement(pts, pts, NAMES, [0.1] * 3)
    assert all(r["class_agreement"] == 1.0 and r["mae"] == pytest.approx(0.0) for r in same.values())
    moved = pts.copy()
    moved[:, NAMES.index("menton")] += np.array([0.0, 15.0])      # a steeper mandibular plane
    diff = ceph.agreement(moved, pts, NAMES, [0.1] * 3)
    assert diff["FMA"]["mae"] > 3 and diff["SNA"]["mae"] == pytest.approx(0.0) and diff["FMA"]["images"] == 3
    assert "ANB" in ceph.agreement_lines({"all": diff})
