"""The 8 cephalometric measurements of the ISBI 2015 challenge's second task, and their classes.

    values = measure(points, names, spacing_mm=0.3)     # {"ANB": 4.1, ..., "MW": 3.0}
    classes = classify(values)                          # {"ANB": (1, "class I (normal)"), ...}
    report = agreement(pred, gt, names, spacings)       # per measurement: classes agree, MAE

Definitions and class bounds: Wang et al., "A benchmark for comparison of dental radiography analysis
algorithms", Medical Image Analysis 31 (2016) 63-76, Table 2 (landmark numbers L1-L19 as in the
ISBI 2015 order); ODI after Kim, Am J Orthod 65 (1974) 586-611; APDI after Kim & Vietas, Am J
Orthod 73 (1978) 619-633. Angles are in degrees, MW in mm (None without a spacing), FHI a ratio.

Conventions, so that a number means one thing: points are image pixels (x right, y down). The
profile is turned to face right first (nasion anterior to sella), so mirrored X-rays measure the
same. An inclination is the angle of a directed line counter-clockwise from +x with y up. The
palatal plane term of ODI is positive when the palatal plane (PNS->ANS) tips down anteriorly
against Frankfort (FH, porion->orbitale) and negative when it tips up (Kim 1974: an anterior upward
tip is an open-bite tendency, so it lowers ODI); in APDI the same angle enters with the opposite sign
(Kim & Vietas 1978: positive when tipped up anteriorly). The AB plane angle of APDI is positive when
B lies anterior to A across the facial plane (N->Pog). MW is the distance between the incisal tips
(L12 upper, L11 lower), negative when the lower incisor lies anterior (a cross bite). The challenge
gives the edge-to-edge class as MW = 0 mm; here 0 <= MW < 2 mm is edge to edge so that every value
has a class.
"""
import numpy as np

NEEDED = ("sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton",
          "gonion", "lower_incisal_incision", "upper_incisal_incision", "posterior_nasal_spine",
          "anterior_nasal_spine")
ORDER = ("ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW")
UNITS = {"FHI": "ratio", "MW": "mm"}
# (upper bound, class number, meaning) in increasing order; the last bound is infinite.
CLASSES = {
    "ANB": [(3.2, 3, "class III"), (5.7, 1, "class I (normal)"), (np.inf, 2, "class II")],
    "SNB": [(74.6, 2, "retrognathic mandible"), (78.7, 1, "normal mandible"), (np.inf, 3, "prognathic mandible")],
    "SNA": [(79.4, 3, "retrognathic maxilla"), (83.2, 1, "normal maxilla"), (np.inf, 2, "prognathic maxilla")],
    "ODI": [(68.4, 3, "open bite tendency"), (80.5, 1, "normal"), (np.inf, 2, "deep bite tendency")],
    "APDI": [(77.6, 2, "class II tendency"), (85.2, 1, "normal"), (np.inf, 3, "class III tendency")],
    "FHI": [(0.65, 3, "long face tendency"), (0.75, 1, "normal"), (np.inf, 2, "short face tendency")],
    "FMA": [(26.8, 3, "low angle tendency"), (31.4, 1, "normal"), (np.inf, 2, "high angle tendency")],
    "MW": [(0.0, 3, "anterior cross bite"), (2.0, 2, "edge to edge"), (4.5, 1, "normal"),
           (np.inf, 4, "large overjet")],
}


def has_landmarks(names):
    """Whether a model's landmark names include every one the 8 measurements need."""
    return set(NEEDED) <= set(names)


def _facing_right(p):
    """Points {name: (x, y)} with y up and the profile facing +x (mirrored when nasion is left of sella)."""
    sign = 1.0 if p["nasion"][0] >= p["sella"][0] else -1.0
    return {k: np.array([sign * v[0], -v[1]], float) for k, v in p.items()}


def _incl(a, b):
    """Inclination of the directed line a->b, degrees counter-clockwise from +x (y up)."""
    d = b - a
    return float(np.degrees(np.arctan2(d[1], d[0])))


def _wrap(angle):
    """An angle difference into (-180, 180]."""
    return float((angle + 180.0) % 360.0 - 180.0) if (angle + 180.0) % 360.0 else 180.0


def _angle_at(vertex, a, b):
    """The unsigned angle a-vertex-b in degrees."""
    u, v = a - vertex, b - vertex
    return float(np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))


def measure(points, names, spacing_mm=None):
    """{measurement: value} of one image's landmarks (K, 2) in pixels named `names`; MW is None when
    no spacing is known. Raises KeyError naming the landmarks missing."""
    missing = [n for n in NEEDED if n not in names]
    if missing:
        raise KeyError(f"the 8 ISBI measurements need the landmarks {', '.join(missing)}")
    p = _facing_right({n: np.asarray(points[names.index(n)], float) for n in NEEDED})
    s, n, a, b = p["sella"], p["nasion"], p["subspinale"], p["supramentale"]
    fh = _incl(p["porion"], p["orbitale"])
    pp = _incl(p["posterior_nasal_spine"], p["anterior_nasal_spine"])
    mp = _incl(p["gonion"], p["menton"])
    face = _incl(n, p["pogonion"])
    ab = _incl(a, b)
    sna, snb = _angle_at(n, s, a), _angle_at(n, s, b)
    upper, lower = p["upper_incisal_incision"], p["lower_incisal_incision"]
    overjet = np.linalg.norm(upper - lower) * (1.0 if upper[0] >= lower[0] else -1.0)
    return {"ANB": sna - snb, "SNB": snb, "SNA": sna,
            "ODI": _wrap(mp - ab) % 180.0 + _wrap(fh - pp),
            "APDI": _wrap(fh - face) + _wrap(ab - face) + _wrap(pp - fh),
            "FHI": float(np.linalg.norm(s - p["gonion"]) / np.linalg.norm(n - p["menton"])),
            "FMA": _wrap(fh - mp),
            "MW": None if not spacing_mm else float(overjet * spacing_mm)}


def classify(values):
    """{measurement: (class number, meaning)} of measure()'s values (None where a value is None)."""
    out = {}
    for name, value in values.items():
        out[name] = None if value is None else next((c, m) for bound, c, m in CLASSES[name]
                                                    if value < bound or bound == np.inf)
    return out


def agreement(pred, gt, names, spacings):
    """Per measurement over N images ((N, K, 2) pixels, spacings in mm/px): how often the class from
    the predicted landmarks equals the class from the annotation, and the mean absolute difference."""
    rows = [(measure(p, names, s), measure(g, names, s)) for p, g, s in zip(pred, gt, spacings)]
    out = {}
    for m in ORDER:
        pairs = [(a[m], b[m]) for a, b in rows if a[m] is not None and b[m] is not None]
        if not pairs:
            continue
        same = [classify({m: a})[m][0] == classify({m: b})[m][0] for a, b in pairs]
        out[m] = {"class_agreement": float(np.mean(same)), "mae": float(np.mean([abs(a - b) for a, b in pairs])),
                  "unit": UNITS.get(m, "deg"), "images": len(pairs)}
    return out


def agreement_lines(by_group):
    """Markdown: per measurement, the class agreement and mean absolute difference of the predicted
    landmarks' values with the annotation's, over all test images (and the annotators' own agreement
    when evaluate found two). `by_group`: {"all": agreement(...), "inter_observer_b_vs_a": ...}."""
    if not by_group.get("all"):
        return ""
    inter = next((k for k in by_group if k.startswith("inter_observer_")), None)
    head = "| measurement | classes agree | MAE |" + (" annotators: classes agree | MAE |" if inter else "")
    lines = ["The ISBI 2015 measurements from predicted vs annotated landmarks (all test images)"
             + (f"; {inter[15:].replace('_vs_', ' vs ')} beside" if inter else ""), "", head,
             "|---|---|---|" + ("---|---|" if inter else "")]
    for m, r in by_group["all"].items():
        row = f"| {m} | {r['class_agreement'] * 100:.1f} % | {r['mae']:.2f} {r['unit']} |"
        if inter and m in by_group[inter]:
            o = by_group[inter][m]
            row += f" {o['class_agreement'] * 100:.1f} % | {o['mae']:.2f} {o['unit']} |"
        lines.append(row)
    return "\n".join(lines) + "\n"
