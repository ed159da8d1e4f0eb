"""Paper-faithful preprocessing of a dataset folder into HDF5 files for Caffe's HDF5Data layer.

    prep = prepare(cfg)   # -> Prepared: paths of the split files, sample table, counts

Bilateral images give two samples: the left half as is, the right half mirrored onto the left (its
landmarks re-indexed right[i] -> left[i] and x flipped). Each sample is resized to SxS (`resize:
stretch`, the paper's) or padded with black at the right and bottom to a square first (`resize: pad`,
aspect-preserving), replicated to 3 channels and mean-subtracted (geometry.py, inputs.py). Labels are
normalised sample coordinates; the configured head's own targets, if it has any (its `targets`
hook, asked through the registry), are stored beside them. `augment.copies` > 0 adds transformed
training copies (augment.py) in reg_train_aug.h5, which reg_train.txt lists after reg_train.h5.
Splits: splits.py. Results are cached under prepare.cache_dir by a key.

A cache hit costs a key comparison: the key hashes the settings, the bytes of dataset.yaml and
landmarks.csv, and each image's name, size and modification time (as make and git notice a change):
a rewritten, replaced or touched image gets another key, so the data are prepared again (a change
that keeps both size and time, restored on purpose, goes unnoticed). The entry's own files are
checked by size and time, hashed only when their time moved (a copied cache); a bad entry is rebuilt.
"""
import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..registry import HEADS
from ..runtime.atomic import file_sha256, staged_folder
from ..runtime.locks import exclusive
from .augment import augment
from .dataset import DataError, check_landmarks_inside, load_dataset, read_image, select_landmarks
from .geometry import crops_of, cut_sample, resize_sample, to_normalised
from .inputs import to_input, write_h5
from .phantom import write_phantom
from .selection import selection_key
from .splits import assign_splits, selection_order

IMAGENET_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
PREPARE_VERSION = "3"   # bump when the output format or the maths change: part of the cache key
SPLITS = ("cae_train", "cae_test", "reg_train", "reg_test")
SAMPLE_FIELDS = ["index", "image", "side", "flipped", "x0", "y0", "crop_w", "crop_h", "box_w", "box_h",
                 "scale_x", "scale_y", "spacing_mm", "group", "pin", "annotated"] + list(SPLITS)


@dataclass
class Prepared:
    dir: Path
    meta: dict

    def source(self, split):
        """The HDF5Data `source` file (a text list of .h5 files) of a split."""
        return self.dir / f"{split}.txt"

    def h5(self, split):
        return self.dir / f"{split}.h5"

    def h5_files(self, split):
        """Every .h5 file the split's source lists (reg_train: the originals, then the copies)."""
        return [Path(line) for line in self.source(split).read_text().split()]

    def count(self, split):
        return self.meta["counts"][split]

    def samples(self):
        with (self.dir / "samples.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))


def _inputs_hash(ds, settings):
    """The cache key: settings, the index files' bytes, each image's name, size and mtime."""
    h = hashlib.sha256(PREPARE_VERSION.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    for name in ("dataset.yaml", "landmarks.csv"):
        h.update((ds.root / name).read_bytes())
    for rec in ds.images:
        st = rec.path.stat()
        h.update(f"{rec.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _load_images(ds, skip_bad, progress):
    """Decode and check every image; bad ones raise, or with skip_bad are reported and left out."""
    good, skipped = [], []
    for rec in progress(ds.images):
        try:
            img = read_image(rec.path)
            check_landmarks_inside(rec, img.shape)
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append({"image": rec.name, "error": str(e)})
            continue
        good.append((rec, img))
    if not good:
        raise DataError(f"{ds.root}: no usable images left")
    return good, skipped


def _labelled(rec, labels, partial):
    """A sample's `annotated`: all its landmarks labelled, or with `partial` (a head that masks the
    missing ones) at least one, on an image pinned to train (it may not be tested on)."""
    finite = np.isfinite(labels)
    if not rec.annotated or finite.all() or not finite.any():
        return int(bool(rec.annotated and finite.all()))
    if not partial:
        return 0
    if rec.split != "train":
        raise DataError(f"{rec.name}: some landmarks unlabelled (partial labels) but not pinned to train; set its "
                        "split column to train (a partly labelled image cannot be scored)")
    return 1


def _make_samples(ds, loaded, size, mode="stretch", partial=False):
    data, labels, rows = [], [], []
    for rec, img in loaded:
        h, w = img.shape
        for side, x0, cw, flipped in crops_of(ds.layout, w, h):
            sample, (bw, bh) = resize_sample(cut_sample(img, x0, 0, cw, h, flipped), size, mode)
            data.append(sample)
            idx = ds.side_indices(side)
            if rec.annotated:
                labels.append(to_normalised(rec.landmarks[idx], x0, 0, cw, h, flipped, bw, bh).reshape(-1))
            else:
                labels.append(np.full(2 * len(idx), np.nan))
            rows.append({"index": len(rows), "image": rec.name, "side": side, "flipped": int(flipped),
                         "x0": x0, "y0": 0, "crop_w": cw, "crop_h": h, "box_w": bw, "box_h": bh,
                         "scale_x": size / bw, "scale_y": size / bh, "spacing_mm": rec.spacing_mm, "group": rec.group,
                         "pin": rec.split,
                         "annotated": _labelled(rec, labels[-1], partial)})
    return np.stack(data).astype(np.float32), np.stack(labels).astype(np.float32), rows


def label_targets(cfg):
    """(encoder, settings): the configured head's extra HDF5 targets, labels (N, 2K) -> {dataset:
    array}, and the settings they depend on (part of the cache key); (None, {}) when the labels are
    the targets or the stage trains no head."""
    if cfg["stage"] == "pretrain":
        return None, {}
    return HEADS.get(cfg["model"]["head"]).targets(cfg)


def _augmented(rows, gray, labels, pc, bgr, targets, path):
    """Write reg_train's transformed copies to `path`; returns how many."""
    idx = [r["index"] for r in rows if r["reg_train"]]
    k = labels.shape[1] // 2
    images, moved = augment(gray[idx], labels[idx].reshape(-1, k, 2), pc["augment"]["copies"], pc["augment"],
                            seed=pc["augment"]["seed"])
    write_h5(path, to_input(images, bgr), moved.reshape(len(moved), -1).astype(np.float32), targets)
    return len(images)


def configured_dataset(cfg):
    """The config's dataset folder, restricted to dataset.landmarks when that is set."""
    return select_landmarks(load_dataset(cfg["dataset"]["root"]), cfg["dataset"]["landmarks"])


def _write_prepared(out, ds, gray, labels, rows, meta, pc, targets):
    """The split files (and reg_train's augmented copies), samples.csv and prepared.json, built in a
    temporary folder that is renamed to `out` only when complete."""
    with staged_folder(out) as tmp:
        data = to_input(gray, meta["mean_bgr"])
        for split in SPLITS:
            idx = [r["index"] for r in rows if r[split]]
            meta["counts"][split] = len(idx)
            if not idx and split.startswith("cae"):       # reg splits may be empty: pre-training needs no labels
                raise DataError(f"{ds.root}: split '{split}' would be empty; add images or change holdouts")
            write_h5(tmp / f"{split}.h5", data[idx], labels[idx], targets if split.startswith("reg") else None)
            files = [out / f"{split}.h5"]                      # list files name the final folder
            if split == "reg_train" and pc["augment"]["copies"] and idx:     # nothing labelled: nothing to copy
                meta["counts"]["reg_train_aug"] = _augmented(rows, gray, labels, pc, meta["mean_bgr"], targets,
                                                             tmp / "reg_train_aug.h5")
                files.append(out / "reg_train_aug.h5")
            (tmp / f"{split}.txt").write_text("".join(f"{f.resolve()}\n" for f in files))
        with (tmp / "samples.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, SAMPLE_FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        meta["files"] = {f.name: _fingerprint(f) for f in sorted(tmp.iterdir()) if f.suffix in (".h5", ".csv")}
        (tmp / "prepared.json").write_text(json.dumps(meta, indent=1))


def _settings(cfg):
    """Everything besides the files that decides what prepare writes: part of the cache key."""
    dc = cfg["dataset"]
    return {**cfg["prepare"], **{k: dc[k] for k in ("skip_bad", "landmarks", "label_budget")}, **label_targets(cfg)[1],
            **selection_key(dc)}


def _fingerprint(path):
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


def _unchanged(f, want):
    """A cache file as recorded: same size, and same modification time or (moved time) same checksum."""
    if not f.is_file():
        return False
    st = f.stat()
    return st.st_size == want["size"] and (st.st_mtime_ns == want.get("mtime_ns") or file_sha256(f) == want["sha256"])


def _intact(out):
    """The cache entry's meta if prepared.json reads and every file matches its record; None when
    anything is missing, truncated or changed."""
    try:
        meta = json.loads((out / "prepared.json").read_text())
        if not all(_unchanged(out / name, want) for name, want in meta["files"].items()):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare(cfg, progress=lambda xs: xs, log=print):
    """Prepare (or find in the cache, checked) the four splits for a resolved config; returns Prepared.
    A cache entry that is truncated or changed is rebuilt, with a word in the log."""
    ds = configured_dataset(cfg)
    key = _inputs_hash(ds, _settings(cfg))
    out = Path(cfg["prepare"]["cache_dir"]) / f"{ds.name}-{key}"
    meta = _intact(out)
    if meta is None:
        with exclusive(out.parent / f".{out.name}.lock", f"prepared-data cache entry {out}", remove=True, wait=True):
            if _intact(out) is None:                     # another process may have just finished it
                if out.exists():
                    log(f"prepared data in {out} is incomplete or changed; preparing it again")
                _build(cfg, ds, key, out, progress, log)
        meta = json.loads((out / "prepared.json").read_text())
    return Prepared(out, meta)


def _check_memory(samples, pc, annotated, ds):
    """Refuse an input size whose prepared arrays would not fit in memory (they are built in memory,
    and Caffe's HDF5Data loads a whole file)."""
    copies = pc["augment"]["copies"]
    need = (samples + annotated * copies) * 3 * pc["input_size"] ** 2 * 4 * 2      # float32, input + grey copy
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.7 * total:
        raise DataError(f"{ds.root}: prepare.input_size {pc['input_size']} with {samples} samples and "
                        f"{copies} augmented copies needs about {need / 2 ** 30:.1f} GB, more than 70% of this "
                        f"machine's {total / 2 ** 30:.1f} GB; lower input_size or augment.copies")


def _build(cfg, ds, key, out, progress, log):
    """Decode, crop, resize and split the dataset, and write the cache entry `out`."""
    pc, dc = cfg["prepare"], cfg["dataset"]
    loaded, skipped = _load_images(ds, dc["skip_bad"], progress)
    for s in skipped:
        log(f"skipped {s['image']}: {s['error']}")
    per_image = 2 if ds.layout == "bilateral" else 1
    _check_memory(per_image * len(loaded), pc, per_image * sum(r.annotated for r, _ in loaded), ds)
    partial = cfg["stage"] != "pretrain" and HEADS.get(cfg["model"]["head"]).partial_labels(cfg)
    gray, labels, rows = _make_samples(ds, loaded, pc["input_size"], pc["resize"], partial)
    order = selection_order(dc["label_selection"], rows, pc, {r.name: img for r, img in loaded}) \
        if dc["label_budget"] else None
    leaked = assign_splits(rows, pc, dc["label_budget"], order)
    train_idx = [r["index"] for r in rows if r["cae_train"]]
    bgr = IMAGENET_BGR_MEAN if pc["mean"] == "imagenet" else [float(gray[train_idx].mean())] * 3
    meta = {"dataset": ds.name, "synthetic": ds.synthetic, "dataset_root": str(ds.root), "layout": ds.layout,
            "landmark_names": [ds.landmark_names[i] for i in ds.side_indices("left" if ds.layout == "bilateral" else "whole")],
            "num_landmarks": ds.sample_landmarks, "input_size": pc["input_size"], "resize": pc["resize"],
            "mean_bgr": list(bgr), "counts": {}, "images": len(loaded), "skipped": skipped, "key": key,
            "label_budget": dc["label_budget"], "spacing_mm": sorted({r.spacing_mm for r, _ in loaded}),
            **_split_facts(rows, leaked, pc["test_duplicates"], log),
            "augment": pc["augment"], "targets": _settings(cfg).get("head", "coordinates")}
    _write_prepared(out, ds, gray, labels, rows, meta, pc, label_targets(cfg)[0])


def _split_facts(rows, leaked, policy, log):
    """prepared.json's counts of images per split and test set, and the leaks: training images
    that are one radiograph with a test image (their group has one), kept or dropped."""
    images = lambda keep: sorted({r["image"] for r in rows if keep(r)})    # noqa: E731
    pins = sorted({r["pin"] for r in rows if r["pin"]})
    facts = {"labelled_train_images": len(images(lambda r: r["reg_train"])),
             "test_images": len(images(lambda r: r["reg_test"])),
             "pinned": {p: len(images(lambda r: r["pin"] == p)) for p in pins},
             "test_sets": {t: len(images(lambda r: r["reg_test"] and (r["pin"] or "holdout") == t))
                           for t in sorted({r["pin"] or "holdout" for r in rows if r["reg_test"]})},
             "leaks": {"policy": policy, "images": sorted({r["image"] for r in leaked}),
                       "labelled": sorted({r["image"] for r in leaked if r["reg_train"]})}}
    if leaked:
        log(f"{len(facts['leaks']['images'])} training images are the same radiograph as a test image "
            f"(one group); {'left out of training' if policy == 'drop' else 'kept'} (prepare.test_duplicates: "
            f"{policy}); {len(facts['leaks']['labelled'])} of them are labelled")
    return facts


def ensure_dataset(cfg, log=print):
    """Make the configured phantom when the config asks for one and it is missing."""
    root, synth = Path(cfg["dataset"]["root"]), cfg["dataset"]["synth"]
    if synth is not None and not (root / "dataset.yaml").exists():
        log(f"writing the synthetic phantom to {root} ({synth})")
        write_phantom(root, **synth)


def sample_landmarks(cfg, log=print):
    """K, the landmarks per sample of the configured dataset (a half's for bilateral data)."""
    ensure_dataset(cfg, log)
    return configured_dataset(cfg).sample_landmarks
