"""Where a landmark is: image pixels <-> normalised sample coordinates, and how a sample is cut.

    crops = crops_of("bilateral", width, height)       # [(side, x0, crop_w, flipped)]
    crop = cut_sample(image, x0, 0, crop_w, height, flipped)
    labels = to_normalised(points, x0, y0, w, h, flipped, box_w, box_h)
    points = to_pixels(labels, *sample_box(samples_csv_row))
    sample, (box_w, box_h) = resize_sample(crop, 256, "pad")

Bilateral images give two samples: the left half as is, the right half mirrored onto the left.
Coordinates use pixel centres (pixel i is at i); a landmark u in a box of width w (the crop, or the
padded square) is (u + 0.5) / w in [0, 1], so to_pixels inverts to_normalised exactly. Every head
predicts these normalised coordinates, so evaluation maps them back the same way for all.
"""
import cv2
import numpy as np


def crops_of(layout, width, height):
    """[(side, x0, crop_w, flipped)] of one image: two halves for bilateral data, else the whole."""
    if layout == "whole":
        return [("whole", 0, width, False)]
    hw = width // 2
    return [("left", 0, hw, False), ("right", width - hw, hw, True)]


def cut_sample(image, x0, y0, w, h, flipped):
    """A sample's crop of its image, mirrored when it is a right half: how prepare, the refine net
    and predict all cut a sample."""
    crop = image[y0:y0 + h, x0:x0 + w]
    return crop[:, ::-1] if flipped else crop


def to_normalised(points, x0, y0, w, h, flipped, box_w=None, box_h=None):
    """Original pixel coords (N, 2) -> labels in [0, 1] of the (possibly mirrored) w x h crop, in a
    box_w x box_h box (the crop itself, or the square it is padded to)."""
    u = points[:, 0] - x0
    if flipped:
        u = (w - 1) - u
    return np.stack([(u + 0.5) / (box_w or w), (points[:, 1] - y0 + 0.5) / (box_h or h)], 1)


def to_pixels(labels, x0, y0, w, h, flipped, box_w=None, box_h=None):
    """Inverse of to_normalised: labels (N, 2) -> original-image pixel coordinates."""
    u = labels[:, 0] * (box_w or w) - 0.5
    if flipped:
        u = (w - 1) - u
    return np.stack([u + x0, labels[:, 1] * (box_h or h) - 0.5 + y0], 1)


def sample_box(sample):
    """The to_pixels arguments after the labels, from a samples.csv row."""
    return (int(sample["x0"]), int(sample["y0"]), int(sample["crop_w"]), int(sample["crop_h"]),
            bool(int(sample["flipped"])), int(sample["box_w"]), int(sample["box_h"]))


def resize_sample(crop, size, mode):
    """A crop -> size x size: stretched, or padded with black at the right and bottom to a square
    first. Returns the image and the box (box_w, box_h) its labels are normalised by."""
    h, w = crop.shape
    if mode == "pad":
        side = max(h, w)
        square = np.zeros((side, side), np.float32)
        square[:h, :w] = crop
        crop, (w, h) = square, (side, side)
    interp = cv2.INTER_AREA if w > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp), (w, h)
