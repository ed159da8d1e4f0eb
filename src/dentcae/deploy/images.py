"""New X-rays to predict on: which files, their pixels, and their pixel spacing.

    files = list_inputs(["scans/", "extra/*.dcm", "one.png"])      # [(path, name)], sorted
    xray = read_xray(path, spacing=0.1)      # .grey (H, W) float32 in [0, 255], .spacing (sx, sy) or None

PNG, JPEG, BMP and TIFF (8 and 16 bit) are read as training images are (data/dataset.py read_image:
16-bit values scaled by 255/65535). DICOM files (by suffix .dcm/.dicom, or the DICM marker) are
read with pydicom: MONOCHROME1 is inverted, the VOI window applied when the file has one, else
values scaled by their stored bit depth (8-bit data stay as they are). Spacing, in this order:
PixelSpacing (calibrated to the patient), ImagerPixelSpacing (measured at the detector, so it
includes the X-ray magnification: a warning says so), `--spacing`, else none (pixels only). A
`--spacing` that disagrees with the file's spacing is ignored, with a warning.
"""
import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import DataError, check_size, read_image

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
DARK = 16.0     # a brightest grey below this (of 255) is warned about: 12-bit data read as 16-bit reach 15.9


@dataclass
class XRay:
    grey: np.ndarray
    spacing: tuple = None                 # (x, y) mm per pixel, or None
    spacing_source: str = "none"
    warnings: list = field(default_factory=list)


def _is_dicom(path):
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not path.is_file():              # missing, a broken link, a folder: read_image says which
        return False
    with open(path, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def _walk(folder):
    """Every file under `folder`, sorted, following linked folders (each real folder once) and
    keeping broken links (predict reports them in errors.csv instead of skipping them unsaid)."""
    seen, out = set(), []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        out += [Path(root) / f for f in files]
    return sorted(out)


def list_inputs(inputs):
    """[(file, name)] of the images named by files, folders (searched recursively, linked folders
    too: image suffixes, and files without a suffix that are DICOM) and globs; a name is the path below the folder given
    (or the file's name), unique across the inputs."""
    found = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found += [(f, f.relative_to(path).as_posix()) for f in _walk(path)
                      if f.suffix.lower() in SUFFIXES or (f.is_file() and not f.suffix and _is_dicom(f))]
        elif path.is_file():
            found.append((path, path.name))
        else:
            matches = sorted(Path(m) for m in glob.glob(given, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{given}: no such file or folder, and no file matches it as a pattern")
            found += [(m, m.name) for m in matches if m.is_file()]
    names, out = set(), []
    for f, name in found:
        unique, i = name, 2
        while unique in names:
            unique, i = f"{Path(name).stem}~{i}{Path(name).suffix}", i + 1
        names.add(unique)
        out.append((f, unique))
    return out


def _dicom_grey(ds, path):
    """A DICOM dataset's pixels as float32 grey in [0, 255]."""
    try:
        raw = ds.pixel_array
    except Exception as e:                       # pydicom raises many kinds for unsupported data
        raise DataError(f"{path}: cannot decode the DICOM pixel data ({e})") from None
    if raw.ndim != 2:
        raise DataError(f"{path}: DICOM pixel data of shape {raw.shape}; one grey frame is needed")
    values = raw.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + \
        float(getattr(ds, "RescaleIntercept", 0) or 0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        first = lambda v: float(v[0] if hasattr(v, "__len__") and not isinstance(v, str) else v)   # noqa: E731
        c, w = first(ds.WindowCenter), max(first(ds.WindowWidth), 1.0)
        grey = np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1) * 255.0
    else:
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        grey = np.clip(values, 0, 2 ** bits - 1) * (255.0 / (2 ** bits - 1))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 255.0 - grey
    return grey.astype(np.float32)


def _dicom_spacing(ds, path):
    """((x, y) mm/px, source) of a DICOM dataset, or (None, "none"). A spacing present but not two
    finite numbers > 0 (row, column) is an error naming the file: its millimetres would be wrong."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds and ds[key].value not in (None, "", []):
            value = ds[key].value
            values = [value] if isinstance(value, (int, float, str, bytes)) else list(value)
            try:
                row, col = (float(v) for v in values)       # DICOM: row spacing (y) first
            except (TypeError, ValueError):
                raise DataError(f"{path}: {key} must hold two numbers (row, column spacing in mm), "
                                f"got {[str(v) for v in values]}") from None
            if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
                raise DataError(f"{path}: {key} must be finite and > 0, got {row:g}, {col:g}")
            return (col, row), key
    return None, "none"


def read_dicom(path):
    try:
        import pydicom
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a readable DICOM file ({e})") from None
    grey = check_size(_dicom_grey(ds, path), path)
    spacing, source = _dicom_spacing(ds, path)
    return grey, spacing, source


def read_xray(path, spacing=None):
    """An X-ray's grey pixels and spacing (see the module's docstring for the order of sources)."""
    path = Path(path)
    if _is_dicom(path):
        grey, own, source = read_dicom(path)
    else:
        grey, own, source = read_image(path), None, "none"
    xray = XRay(grey)
    if float(grey.max()) < DARK:
        xray.warnings.append(f"the image is nearly black (brightest grey {grey.max():.1f} of 255): if it holds 10- or "
                             "12-bit values in a 16-bit file, rescale it to 16 bits or give the DICOM, or expect "
                             "wrong landmarks")
    given = None if spacing is None else (float(spacing), float(spacing))
    if own is not None:
        xray.spacing, xray.spacing_source = own, source
        if source == "ImagerPixelSpacing":
            xray.warnings.append("spacing from ImagerPixelSpacing: measured at the detector, so millimetres "
                                 "include the X-ray's magnification (no PixelSpacing in the file)")
        if given is not None and not np.allclose(given, own, rtol=1e-3):
            xray.warnings.append(f"--spacing {spacing:g} ignored: the file says {own[0]:g} x {own[1]:g} mm/px ({source})")
    elif given is not None:
        xray.spacing, xray.spacing_source = given, "--spacing"
    return xray
