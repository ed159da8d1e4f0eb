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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import DataError, read_image

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclass
class XRay:
    grey: np.ndarray
    spacing: tuple = None                 # (x, y) mm per pixel, or None
    spacing_source: str = "none"
    warnings: list = field(default_factory=list)


def _is_dicom(path):
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def list_inputs(inputs):
    """[(file, name)] of the images named by files, folders (searched recursively: image suffixes,
    and files without a suffix that are DICOM) and globs; a name is the path below the folder given
    (or the file's name), unique across the inputs."""
    found = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found += [(f, f.relative_to(path).as_posix()) for f in sorted(path.rglob("*"))
                      if f.is_file() and (f.suffix.lower() in SUFFIXES or (not f.suffix and _is_dicom(f)))]
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


def _dicom_spacing(ds):
    """((x, y) mm/px, source) of a DICOM dataset, or (None, "none")."""
    for key, source in (("PixelSpacing", "PixelSpacing"), ("ImagerPixelSpacing", "ImagerPixelSpacing")):
        if key in ds and ds[key].value:
            row, col = (float(v) for v in ds[key].value[:2])       # DICOM: row spacing (y) first
            if row > 0 and col > 0:
                return (col, row), source
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
    spacing, source = _dicom_spacing(ds)
    return _dicom_grey(ds, path), spacing, source


def read_xray(path, spacing=None):
    """An X-ray's grey pixels and spacing (see the module's docstring for the order of sources)."""
    path = Path(path)
    if _is_dicom(path):
        grey, own, source = read_dicom(path)
    else:
        grey, own, source = read_image(path), None, "none"
    xray = XRay(grey)
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
