"""An X-ray with its predicted landmarks drawn on: numbered, named, flagged ones marked. Draws arrays.

    picture = draw_overlay(grey, points, names, flagged)      # (H, W, 3) uint8 BGR
"""
import cv2
import numpy as np

GOOD, FLAGGED, TEXT = (60, 220, 60), (40, 40, 255), (255, 255, 255)


def draw_overlay(grey, points, names, flagged, title=""):
    """The grey image (values in [0, 255]) in colour with a dot, number and name per landmark; a
    flagged landmark (low confidence) is red with a ring and a '?' after its name. Images under
    800 px a side are drawn enlarged by a whole factor, so that the names stay readable."""
    zoom = max(1, int(np.ceil(800 / max(np.shape(grey)))))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    if zoom > 1:
        grey = cv2.resize(grey, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    scale = max(h, w) / 800.0
    font, size, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, max(1, round(scale))
    radius = max(2, round(3 * scale))
    for i, ((x, y), name, bad) in enumerate(zip(points, names, flagged)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        p = (int(round((x + 0.5) * zoom - 0.5)), int(round((y + 0.5) * zoom - 0.5)))
        colour = FLAGGED if bad else GOOD
        cv2.circle(img, p, radius, colour, -1, cv2.LINE_AA)
        if bad:
            cv2.circle(img, p, 3 * radius, colour, thick, cv2.LINE_AA)
        label = f"{i + 1} {name}{' ?' if bad else ''}"
        at = (min(p[0] + 2 * radius, w - 1), max(p[1] - 2 * radius, 10))
        cv2.putText(img, label, at, font, size, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(img, label, at, font, size, colour if bad else TEXT, thick, cv2.LINE_AA)
    if title:
        cv2.putText(img, title, (8, int(20 * scale)), font, size * 1.2, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(img, title, (8, int(20 * scale)), font, size * 1.2, TEXT, thick, cv2.LINE_AA)
    return img
