"""Test-time views (views.py): a net's answer in a view maps back exactly, and views are checked."""
import numpy as np
import pytest

from dentcae import views
from dentcae.codecs import heatmap
from dentcae.schema import ConfigError, check_views


@pytest.mark.parametrize("view", [{}, {"shift": [6, -3]}, {"scale": 1.1}, {"rotate": 5.0},
                                  {"rotate": -3.0, "scale": 0.92, "shift": [-4, 7]}])
def test_a_heatmap_peak_seen_in_a_view_maps_back_to_the_original_point(view):
    size = 256
    labels = np.array([[[0.41, 0.37], [0.62, 0.55], [0.35, 0.71]]])
    m = views.view_matrix(view, size)
    seen = views.labels_to_view(labels, m, size)                # where the view shows each landmark
    decoded = heatmap.decode(heatmap.encode(seen, size, 2.0), size)
    back = views.labels_from_view(decoded, m, size)
    assert np.abs((back - labels) * size).max() < 0.05          # sub-pixel, in input pixels


def test_a_warped_image_shows_its_dot_where_the_matrix_puts_it():
    size, point = 128, np.array([40.3, 71.6])
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * 3.0 ** 2)).astype(np.float32)
    m = views.view_matrix({"rotate": 7.0, "scale": 1.08, "shift": [5, -2]}, size)
    seen = views.warp(image, m, size)
    centroid = np.array([(seen * xx).sum(), (seen * yy).sum()]) / seen.sum()
    np.testing.assert_allclose(centroid, views.apply(m, point), atol=0.1)


def test_the_identity_view_comes_first_and_once():
    assert views.with_identity([]) == [{}]
    assert views.with_identity([{"shift": [0, 0]}, {"rotate": 3}, {"rotate": 3}]) == [{}, {"rotate": 3}]
    np.testing.assert_allclose(views.view_matrix({}, 64), [[1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("bad, words", [({"flip": True}, "flips are not offered"), ({"rotate": 90}, "rotate"),
                                        ({"scale": 0}, "scale"), ({"shift": [1]}, "shift"), ("left", "mapping")])
def test_a_bad_view_is_refused_by_its_key(bad, words):
    with pytest.raises(ConfigError, match=r"test_time\.views\[1\]': .*" + words):
        check_views({"test_time": {"views": [{}, bad]}}, "test_time.views")
