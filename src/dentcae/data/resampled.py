"""Prepared samples read again from their images at another size: the refine net's finer samples,
the unlabelled samples of consistency training.

    grey = samples_at(cfg, rows, 768)       # (N, 768, 768) float32, rows of prep.samples()

Each sample is cut (and mirrored) from its image as prepare.py cut it and resized (prepare.resize)
to `size`; its box must be the prepared one, so its normalised labels stay valid.
"""
import numpy as np

from .dataset import read_image
from .geometry import cut_sample, resize_sample, sample_box
from .prepare import configured_dataset


def samples_at(cfg, rows, size):
    """(N, size, size) float32 grey samples of prepared-sample rows."""
    recs = {r.name: r for r in configured_dataset(cfg).images}
    images = []
    for row in rows:
        x0, y0, cw, ch, flipped, bw, bh = sample_box(row)
        crop = cut_sample(read_image(recs[row["image"]].path), x0, y0, cw, ch, flipped)
        sample, box = resize_sample(crop, size, cfg["prepare"]["resize"])
        if box != (bw, bh):
            raise ValueError(f"{row['image']}: its box {box} differs from the prepared one {(bw, bh)}")
        images.append(sample)
    return np.stack(images).astype(np.float32) if images else np.zeros((0, size, size), np.float32)
