"""A synthetic, dental-panoramic-like X-ray phantom with 8 landmarks (4 per side). SYNTHETIC DATA.

    write_phantom("data/phantom", images=108, annotated=54, seed=0)

Each image is drawn in a canonical frame (mandible with rami and condyles, an upper and a lower row
of teeth with roots, bone texture, soft tissue), with per-side shape changes, then warped by a random
rotation, scale and shift; the landmarks go through the same matrix. Exposure, blur, noise and
occasional bright artefacts (an ear ring, as in the paper's Fig. 6) follow. Deterministic per seed.
It is a stand-in so the pipeline runs out of the box, not a model of real patients.
"""
import csv
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..runtime.atomic import staged_folder

WIDTH, HEIGHT = 512, 320
SPACING_MM = 0.25
SIDE_NAMES = ["condylion", "gonion", "mental", "canine_apex"]
LANDMARKS = [f"{n}_left" for n in SIDE_NAMES] + [f"{n}_right" for n in SIDE_NAMES]


def _smooth_noise(rng, shape, sigma):
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return n / (n.std() + 1e-6)


def _side_points(rng, cx, cy, sign):
    """Canonical landmark positions of one side (sign -1 image-left, +1 image-right), jittered."""
    j = lambda s: rng.normal(0.0, s)  # noqa: E731
    a = 165 + j(8)                       # half jaw width
    condylion = (cx + sign * (a + j(6)), 55 + j(8))
    gonion = (cx + sign * (a * 0.93 + j(6)), 205 + j(10))
    mental = (cx + sign * (a * 0.48 + j(6)), 262 + j(6))
    canine = (cx + sign * (a * 0.27 + j(4)), 192 + j(8))
    return np.array([condylion, gonion, mental, canine], np.float64)


def _draw_canonical(rng, pts_l, pts_r, cx):
    img = np.zeros((HEIGHT, WIDTH), np.float32)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    # soft tissue: a broad bright face shadow, darker airway band
    img += 55 * np.exp(-(((xx - cx) / 260) ** 2 + ((yy - 170) / 180) ** 2))
    img -= 18 * np.exp(-((yy - 140) / 14) ** 2)
    bone = np.zeros_like(img)
    # mandible: gonion_L -> mental_L -> chin -> mental_R -> gonion_R, and the rami up to the condyles
    chin = np.array([cx, 285 + rng.normal(0, 5)])
    body = np.array([pts_l[1], pts_l[2], chin, pts_r[2], pts_r[1]])
    t = np.linspace(0, 1, 60)
    curve = np.stack([np.interp(t, np.linspace(0, 1, len(body)), body[:, i]) for i in (0, 1)], 1)
    thick = int(26 + rng.normal(0, 3))
    cv2.polylines(bone, [np.round(curve).astype(np.int32)], False, 1.0, thick, cv2.LINE_AA)
    for pts in (pts_l, pts_r):
        cv2.line(bone, tuple(np.round(pts[1]).astype(int)), tuple(np.round(pts[0]).astype(int)),
                 1.0, int(30 + rng.normal(0, 3)), cv2.LINE_AA)
        cv2.ellipse(bone, tuple(np.round(pts[0]).astype(int)), (17, 12), 0, 0, 360, 1.2, -1, cv2.LINE_AA)
    # maxilla: a fainter band above the upper teeth
    cv2.ellipse(bone, (int(cx), 120), (170, 30), 0, 180, 360, 0.6, 22, cv2.LINE_AA)
    texture = 0.75 + 0.25 * _smooth_noise(rng, img.shape, 2.0)
    img += 95 * cv2.GaussianBlur(bone, (0, 0), 2.0) * texture
    # teeth: crowns along the occlusal line, roots toward the jaws; the canine roots end at landmark 4
    teeth = np.zeros_like(img)
    for pts, sign in ((pts_l, -1), (pts_r, 1)):
        canine_x, apex_y = pts[3]
        for k in range(8):
            x = cx + sign * (10 + k * (abs(canine_x - cx) - 10) / 2.0) if k < 3 else \
                canine_x + sign * (k - 2) * 19
            if abs(x - cx) > abs(pts[1][0] - cx) - 25:
                break
            w = 7 + (k >= 3) * 3
            root_len = (apex_y - 150) if k == 2 else 22 + rng.normal(0, 3)
            x0 = canine_x if k == 2 else x
            cv2.rectangle(teeth, (int(x0 - w), 136), (int(x0 + w), 150), 1.4, -1)          # lower crown
            root = np.array([[x0 - w + 2, 150], [x0 + w - 2, 150], [x0, 150 + root_len]], np.int32)
            cv2.fillPoly(teeth, [root], 1.0, cv2.LINE_AA)
            cv2.rectangle(teeth, (int(x0 - w), 118), (int(x0 + w), 132), 1.4, -1)          # upper crown
            up = np.array([[x0 - w + 2, 118], [x0 + w - 2, 118], [x0, 118 - 20 - rng.normal(0, 3)]], np.int32)
            cv2.fillPoly(teeth, [up], 1.0, cv2.LINE_AA)
    img += 70 * cv2.GaussianBlur(teeth, (0, 0), 1.2)
    return img


def make_image(rng):
    """One phantom image (uint8 HxW) and its 8 landmarks (8, 2) in pixel coordinates."""
    cx = WIDTH / 2 + rng.normal(0, 4)
    pts = np.concatenate([_side_points(rng, cx, 0, -1), _side_points(rng, cx, 0, 1)])
    img = _draw_canonical(rng, pts[:4], pts[4:], cx)
    angle, scale = rng.normal(0, 4), rng.uniform(0.85, 1.1)
    shift = rng.normal(0, [12, 10])
    m = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), angle, scale)
    m[:, 2] += shift
    img = cv2.warpAffine(img, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderValue=0)
    pts = pts @ m[:, :2].T + m[:, 2]
    if rng.random() < 0.25:  # ear ring / metal artefact: bright, not anatomy
        c = (int(rng.uniform(20, WIDTH - 20)), int(rng.uniform(20, HEIGHT - 20)))
        cv2.circle(img, c, int(rng.uniform(6, 14)), 230.0, int(rng.integers(2, 5)), cv2.LINE_AA)
    gain, gamma = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.25)
    img = 255.0 * (np.clip(img * gain, 0, 255) / 255.0) ** gamma
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.6))
    img += rng.normal(0, rng.uniform(3, 8), img.shape) + 6 * _smooth_noise(rng, img.shape, 8)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), pts


def write_phantom(out, images=108, annotated=54, seed=0):
    """Write a dataset folder (format of data/README.md); returns its path."""
    if not 0 <= annotated <= images:
        raise ValueError(f"annotated ({annotated}) must be between 0 and images ({images})")
    out = Path(out)
    with staged_folder(out) as tmp:
        _write_into(tmp, images, annotated, seed)
    return out


def _write_into(tmp, images, annotated, seed):
    """The phantom's images, landmarks.csv and dataset.yaml, into the folder `tmp`."""
    root = np.random.SeedSequence(seed)
    labelled = set(np.random.default_rng(root.spawn(1)[0]).choice(images, annotated, replace=False).tolist())
    rows = []
    for i, child in enumerate(root.spawn(images + 1)[1:]):
        img, pts = make_image(np.random.default_rng(child))
        name = f"phantom_{i:04d}.png"
        cv2.imwrite(str(tmp / name), img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if i in labelled:
            rows.append([name] + [f"{v:.2f}" for v in pts.reshape(-1)])
    with (tmp / "landmarks.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image"] + [f"{a}{k}" for k in range(1, 9) for a in "xy"])
        w.writerows(rows)
    meta = {
        "name": f"phantom-seed{seed}",
        "synthetic": True,
        "description": "SYNTHETIC dental-panoramic-like phantom written by `dentcae synth`; not patient data",
        "landmarks": LANDMARKS,
        "spacing_mm": SPACING_MM,
        "layout": "bilateral",
        "sides": {"left": LANDMARKS[:4], "right": LANDMARKS[4:]},
    }
    (tmp / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
