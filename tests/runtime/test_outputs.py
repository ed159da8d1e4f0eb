"""runtime.outputs.overlap: the one is / lies inside / holds relation every output check uses, and
export's use of it."""
import json
import os

import pytest

from dentcae.deploy.bundle import BundleError, export_bundle
from dentcae.inference.bundles import FORMAT
from dentcae.runtime.outputs import overlap


def test_overlap_names_each_relation(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    assert overlap(a, a) == "is"
    assert overlap(a / "sub", a) == "lies inside"
    assert overlap(a / "sub" / "new", a) == "lies inside"        # not yet written: still inside
    assert overlap(a, a / "sub") == "holds"
    assert overlap(a, b) is None and overlap(tmp_path / "ab", a) is None   # a name prefix is not a parent


def test_overlap_follows_links_and_dots(tmp_path):
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    assert overlap(tmp_path / "link" / "out", tmp_path / "data") == "lies inside"
    assert overlap(tmp_path / "data" / ".." / "data", tmp_path / "link") == "is"


def test_a_file_input_holds_nothing(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert overlap(tmp_path / "x.png" / "out", image, can_hold=False) is None
    assert overlap(tmp_path, image, can_hold=False) == "holds"


def test_export_refuses_overwriting_a_bundle_that_holds_its_run(tmp_path):
    """--overwrite of an earlier bundle would delete a run folder kept inside it: refused, kept."""
    bundle, run = tmp_path / "bundle", tmp_path / "bundle" / "run"
    run.mkdir(parents=True)
    (bundle / "model.json").write_text(json.dumps({"format": FORMAT}))
    (run / "config.yaml").write_text("name: kept\n")
    with pytest.raises(BundleError, match="holds"):
        export_bundle(run, bundle, overwrite=True)
    assert (run / "config.yaml").read_text() == "name: kept\n"
