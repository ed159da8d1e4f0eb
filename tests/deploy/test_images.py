"""New X-rays for `dentcae predict`: which files, their pixels (PNG, TIFF, DICOM) and their spacing."""
import cv2
import numpy as np
import pytest

from dentcae.data.dataset import DataError
from dentcae.deploy.images import list_inputs, read_xray

from conftest import write_dicom


@pytest.fixture
def grey():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (80, 64)).astype(np.uint8)


def test_dicom_pixel_spacing_is_used_and_pixels_match_the_png(tmp_path, grey):
    cv2.imwrite(str(tmp_path / "a.png"), grey)
    write_dicom(tmp_path / "a.dcm", grey, pixel_spacing=0.3)
    png, dcm = read_xray(tmp_path / "a.png", spacing=0.3), read_xray(tmp_path / "a.dcm")
    np.testing.assert_array_equal(png.grey, dcm.grey)
    assert dcm.spacing == (0.3, 0.3) and dcm.spacing_source == "PixelSpacing" and not dcm.warnings
    assert png.spacing == (0.3, 0.3) and png.spacing_source == "--spacing"


def test_imager_spacing_warns_and_a_disagreeing_spacing_option_loses(tmp_path, grey):
    write_dicom(tmp_path / "d.dcm", grey, imager_spacing=0.1)
    x = read_xray(tmp_path / "d.dcm", spacing=0.3)
    assert x.spacing == (0.1, 0.1) and x.spacing_source == "ImagerPixelSpacing"
    assert any("detector" in w and "magnification" in w for w in x.warnings)
    assert any("--spacing 0.3 ignored" in w for w in x.warnings)


def test_no_spacing_anywhere_gives_none(tmp_path, grey):
    write_dicom(tmp_path / "n.dcm", grey)
    cv2.imwrite(str(tmp_path / "n.png"), grey)
    assert read_xray(tmp_path / "n.dcm").spacing is None and read_xray(tmp_path / "n.png").spacing is None
    assert read_xray(tmp_path / "n.dcm", spacing=0.2).spacing == (0.2, 0.2)


def test_monochrome1_is_inverted_and_16_bit_data_scaled(tmp_path, grey):
    write_dicom(tmp_path / "m1.dcm", grey, monochrome1=True)
    np.testing.assert_allclose(read_xray(tmp_path / "m1.dcm").grey, 255.0 - grey)
    wide = grey.astype(np.uint16) * 257                     # 16-bit, full range: the same image
    cv2.imwrite(str(tmp_path / "w.tif"), wide)
    np.testing.assert_allclose(read_xray(tmp_path / "w.tif").grey, grey, atol=1e-3)
    write_dicom(tmp_path / "w.dcm", wide)
    np.testing.assert_allclose(read_xray(tmp_path / "w.dcm").grey, grey, atol=1e-3)
    write_dicom(tmp_path / "win.dcm", wide, window=(32768, 65536))
    np.testing.assert_allclose(read_xray(tmp_path / "win.dcm").grey, grey, atol=0.01)


def test_unreadable_files_raise_data_errors_naming_them(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom file")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for name in ("bad.dcm", "bad.png"):
        with pytest.raises(DataError, match=name):
            read_xray(tmp_path / name)


def test_inputs_are_files_folders_and_globs_with_unique_names(tmp_path, grey):
    (tmp_path / "scans" / "sub").mkdir(parents=True)
    for rel in ("scans/a.png", "scans/sub/b.tif", "scans/notes.txt", "c.png", "other/a.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), grey) if rel.endswith(("png", "tif")) else (tmp_path / rel).write_text("x")
    write_dicom(tmp_path / "scans" / "noext", grey)         # DICOM without a suffix is found by its marker
    found = list_inputs([str(tmp_path / "scans"), str(tmp_path / "c.png"), str(tmp_path / "other" / "*.png")])
    names = [n for _, n in found]
    assert names == ["a.png", "noext", "sub/b.tif", "c.png", "a~2.png"]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        list_inputs([str(tmp_path / "nothing-here*")])


@pytest.mark.parametrize("value, message", [([0.1], "must hold two numbers"), (0.1, "must hold two numbers"),
                                            (["inf", "inf"], "must be finite and > 0"), ([0, 0.1], "must be finite and > 0")])
def test_a_dicom_spacing_that_is_not_two_finite_positive_numbers_is_refused_by_name(tmp_path, grey, value, message):
    import pydicom
    path = write_dicom(tmp_path / "s.dcm", grey)
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = value
    ds.save_as(path)
    with pytest.raises(DataError, match=rf"s.dcm: PixelSpacing {message}"):
        read_xray(path)


def test_non_finite_pixels_tiny_images_and_dark_16_bit_data(tmp_path, grey):
    cv2.imwrite(str(tmp_path / "nan.tiff"), np.where(grey > 100, np.nan, grey).astype(np.float32))
    with pytest.raises(DataError, match=r"nan.tiff: \d+ pixels are NaN or infinite"):
        read_xray(tmp_path / "nan.tiff")
    for shape in ((1, 1), (2, 3), (8, 8)):
        write_dicom(tmp_path / "tiny.dcm", np.zeros(shape, np.uint8))
        with pytest.raises(DataError, match="too small"):
            read_xray(tmp_path / "tiny.dcm")
    cv2.imwrite(str(tmp_path / "twelve.png"), grey.astype(np.uint16) * 16)     # 12-bit data in a 16-bit file
    assert any("nearly black" in w for w in read_xray(tmp_path / "twelve.png").warnings)
    assert not read_xray(tmp_path / "full.png" if cv2.imwrite(str(tmp_path / "full.png"), grey.astype(np.uint16) * 257)
                         else None).warnings


def test_linked_folders_are_searched_and_broken_links_reported(tmp_path, grey):
    (tmp_path / "real").mkdir()
    cv2.imwrite(str(tmp_path / "real/a.png"), grey)
    (tmp_path / "in").mkdir()
    (tmp_path / "in/linked").symlink_to(tmp_path / "real")
    (tmp_path / "in/loop").symlink_to(tmp_path / "in")                 # a loop is walked once
    (tmp_path / "in/broken.png").symlink_to(tmp_path / "gone.png")
    names = [n for _, n in list_inputs([tmp_path / "in"])]
    assert names == ["broken.png", "linked/a.png"]
    with pytest.raises(DataError, match=r"broken.png: a link to .*gone.png, which does not exist"):
        read_xray(tmp_path / "in/broken.png")


def test_predict_outputs_that_are_files_or_hold_inputs_are_refused(tmp_path, grey):
    from conftest import run_cli
    from dentcae.deploy.predict import check_out
    cv2.imwrite(str(tmp_path / "a.png"), grey)
    (tmp_path / "f.txt").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        check_out(tmp_path / "f.txt", [tmp_path / "a.png"])
    with pytest.raises(ValueError, match="holds the input"):
        check_out(tmp_path, [tmp_path / "a.png"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        check_out(tmp_path / "other", [tmp_path / "a.png"])
    (tmp_path / "bundle").mkdir()                       # the model is an input too: nothing written there
    for out, model, how in ((tmp_path / "bundle", tmp_path / "bundle", "is"),
                            (tmp_path / "bundle/p", tmp_path / "bundle", "lies inside"),
                            (tmp_path / "models", tmp_path / "models/bundle", "holds")):
        with pytest.raises(ValueError, match=f"{how} the model"):
            check_out(out, [tmp_path / "a.png"], model)
    check_out(tmp_path / "p", [tmp_path / "a.png"], tmp_path / "bundle")
    for bad in ("inf", "1e400", "nan", "-1"):
        rc, out = run_cli("predict", "m", str(tmp_path / "a.png"), "--out", str(tmp_path / "p"), "--spacing", bad)
        assert rc == 2 and "finite number of mm per pixel" in out
