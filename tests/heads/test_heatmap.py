"""The heatmap head and its codec (codecs/heatmap.py), aspect-preserving resize, augmentation."""
import h5py
import numpy as np
import pytest

from conftest import TEST_FC_WIDTH, tiny
from dentcae.codecs import heatmap
from dentcae.heads.heatmap import heatmap_net
from dentcae.nets.alexnet import classifier, write_net
from dentcae.data.augment import augment, transform_labels
from dentcae.train.losslog import LossLog
from dentcae.data.prepare import prepare
from dentcae.data.geometry import resize_sample, sample_box, to_normalised, to_pixels
from dentcae.train.runfiles import run_dir
from dentcae.train.loop import train
from dentcae.nets.transfer import copy_layers

CONVS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


@pytest.mark.parametrize("size", [128, 448])
def test_heatmap_round_trip_is_sub_pixel_exact_including_borders(size):
    rng = np.random.default_rng(0)
    labels = rng.uniform(0.02, 0.98, (4, 6, 2))
    g = heatmap.grid(size)
    border = [[g[0], g[-1]], [g[0] + 0.3, g[1] - 0.2], [g[-1] - 0.1, g[0] + 0.45], [2.0, size - 3.0]]
    labels[0, :4] = (np.array(border) + 0.5) / size            # on, beside and beyond the outer cells
    back = heatmap.decode(heatmap.encode(labels, size, sigma=2.0), size)
    assert np.abs((back - labels) * size).max() < 0.1           # input pixels
    assert heatmap.encode(labels, size, 2.0).shape == (4, 6, heatmap.heatmap_size(size), heatmap.heatmap_size(size))


def test_heatmap_round_trip_through_a_mirrored_half_in_image_pixels():
    # the right half (x0 = 200, w = 200) of a 400 x 300 image, mirrored, padded to a 300 x 300 box
    pts = np.array([[350.0, 100.0], [201.0, 290.0], [399.0, 3.0]])
    lab = to_normalised(pts, 200, 0, 200, 300, True, 300, 300)
    back = heatmap.decode(heatmap.encode(lab[None], 224, 1.5), 224)[0]
    np.testing.assert_allclose(to_pixels(back, 200, 0, 200, 300, True, 300, 300), pts, atol=0.1)


def test_shape_prior_decoding_ignores_a_brighter_peak_far_away():
    size, rng = 256, np.random.default_rng(2)
    mean = rng.uniform(0.25, 0.75, (6, 2))
    train = mean + rng.normal(0, 0.01, (30, 6, 2))                 # training shapes around a mean
    truth = mean * 1.05 - 0.02                                       # a scaled, shifted test shape
    hm = heatmap.encode(truth[None], size, 2.0)
    decoy = truth.copy()
    decoy[3] = truth[3] + [0.3, -0.2]                               # a brighter, wrong peak for landmark 3
    hm[0, 3] = np.maximum(0.6 * hm[0, 3], heatmap.encode(decoy[None], size, 2.0)[0, 3])
    plain = heatmap.decode(hm, size)[0]
    robust = heatmap.decode_with_prior(hm, size, heatmap.ShapePrior(train))[0]
    assert np.linalg.norm((plain[3] - truth[3]) * size) > 50       # the argmax takes the decoy
    assert np.abs((robust - truth) * size).max() < 0.1             # the prior finds the true peak, exactly
    np.testing.assert_allclose(robust[[0, 1, 2, 4, 5]], plain[[0, 1, 2, 4, 5]])   # and leaves the rest


def test_pad_resize_keeps_the_aspect_and_labels_agree(phantom, tmp_path):
    crop = np.zeros((80, 40), np.float32)
    crop[60, 30] = 255
    img, box = resize_sample(crop, 160, "pad")
    assert box == (80, 80) and img.shape == (160, 160)
    y, x = np.unravel_index(np.argmax(img), img.shape)
    lab = to_normalised(np.array([[30.0, 60.0]]), 0, 0, 40, 80, False, *box)[0]
    assert abs(lab[0] * 160 - 0.5 - x) <= 1 and abs(lab[1] * 160 - 0.5 - y) <= 1
    prep = prepare(tiny(tmp_path, phantom, prepare={"resize": "pad", "input_size": 128}))
    s = prep.samples()[0]
    assert sample_box(s)[5:] == (320, 320) and prep.meta["resize"] == "pad"    # phantom halves: 256 x 320


def test_augmentation_moves_a_painted_dot_with_its_landmark():
    size, rng = 128, np.random.default_rng(1)
    gray = np.zeros((3, size, size), np.float32)
    labels = (rng.integers(30, 98, (3, 2, 2)) + 0.5) / size      # on pixel centres
    for img, lab in zip(gray, labels):
        x, y = np.round(lab[0] * size - 0.5).astype(int)
        img[y - 1:y + 2, x - 1:x + 2] = 255
    settings = {"rotate_deg": 25.0, "scale": 0.2, "shift": 0.1, "gamma": 0.0, "contrast": 0.0, "noise": 0.0}
    images, moved = augment(gray, labels, 4, settings, seed=3)
    assert images.shape == (12, size, size) and moved.shape == (12, 2, 2)
    assert not np.allclose(moved, np.repeat(labels, 4, axis=0))                # the copies really moved
    yy, xx = np.mgrid[0:size, 0:size]
    for img, lab in zip(images, moved):
        w = img / img.sum()                            # the dot's centroid, where it went
        x, y = (w * xx).sum(), (w * yy).sum()
        assert np.hypot(lab[0, 0] * size - 0.5 - x, lab[0, 1] * size - 0.5 - y) < 0.3
    m = np.float64([[1, 0, 5], [0, 1, -3]])
    np.testing.assert_allclose(transform_labels(labels[0], m, size), labels[0] + [[5 / size, -3 / size]])


def test_augmented_copies_go_to_training_only(phantom, tmp_path):
    cfg = tiny(tmp_path, phantom, prepare={"input_size": 96, "augment": {"copies": 3}},
               model={"head": "heatmap"})
    prep = prepare(cfg)
    files = prep.h5_files("reg_train")
    assert [f.name for f in files] == ["reg_train.h5", "reg_train_aug.h5"]
    assert prep.meta["counts"]["reg_train_aug"] == 3 * prep.count("reg_train")
    assert [f.name for f in prep.h5_files("reg_test")] == ["reg_test.h5"]
    with h5py.File(files[1], "r") as f:
        k = heatmap.heatmap_size(96)
        assert f["heatmap"].shape == (3 * prep.count("reg_train"), 4, k, k) and f["data"].shape[1:] == (3, 96, 96)
        back = heatmap.decode(f["heatmap"][:5], 96)
        np.testing.assert_allclose(back.reshape(5, -1), f["label"][:5], atol=0.1 / 96)


@pytest.mark.slow
def test_heatmap_net_takes_bvlc_and_cae_weights_by_name(caffe, tmp_path):
    cls = caffe.Net(str(write_net(classifier(size=227, deploy=True, width=TEST_FC_WIDTH),
                                       tmp_path / "cls.prototxt")), caffe.TEST)
    rng = np.random.default_rng(0)
    for blobs in cls.params.values():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.data.shape).astype(np.float32)
    cls.save(str(tmp_path / "alexnet.caffemodel"))
    net = caffe.Net(str(write_net(heatmap_net(19, size=448, deploy=True), tmp_path / "hm.prototxt")), caffe.TEST)
    assert net.blobs["heatmaps"].data.shape == (1, 19, heatmap.heatmap_size(448), heatmap.heatmap_size(448))
    report = copy_layers(net, tmp_path / "alexnet.caffemodel", CONVS)
    assert list(report["copied"]) == CONVS and "heatmaps" in report["fresh"] and "fc6" not in net.params
    for name in CONVS:
        for a, b in zip(net.params[name], cls.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.slow
def test_tiny_heatmap_training_learns_peaks_from_a_cae(phantom, clean_tmp, quiet):
    cae = tiny(clean_tmp, phantom, stage="pretrain", name="cae", prepare={"input_size": 128})
    train(cae, log=quiet)
    cfg = tiny(clean_tmp, phantom, name="hm", model={"head": "heatmap", "head_width": 32, "heatmap_sigma": 1.5,
                                                     "init": "cae", "pretrain_run": str(run_dir(cae)), "copy_layers": CONVS},
               prepare={"input_size": 128}, solver={"max_iter": 30, "batch_size": 4, "test_interval": 10, "snapshot": 0})
    train(cfg, log=quiet)
    curves = LossLog(run_dir(cfg) / "loss.csv").read()
    prep = prepare(cfg)
    with h5py.File(prep.h5("reg_test"), "r") as f:
        silent = 0.5 * float((f["heatmap"][...] ** 2).sum()) / len(f["heatmap"])   # the loss of all-zero heatmaps
    assert curves["test"][1][-1] < 0.95 * silent          # it predicts peaks, not just an empty map
    assert np.mean(curves["train"][1][-5:]) < np.mean(curves["train"][1][:5])


@pytest.mark.slow
def test_masked_landmarks_contribute_no_gradient(caffe, tmp_path):
    """heatmap_net(masked=True): the loss sees each heatmap times its landmark's mask, so a masked
    channel's output, its 1x1 weights and its bias get exactly zero gradient; the others do not."""
    from dentcae.heads.heatmap.net import encoder_for
    from dentcae.data.inputs import write_h5
    rng = np.random.default_rng(0)
    k, size = 3, 96
    labels = rng.uniform(0.2, 0.8, (4, 2 * k)).astype(np.float32)
    mask = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1], [1, 0, 0]], np.float32)
    targets = encoder_for(size, 2.0, mask)(labels)
    assert np.all(targets["heatmap"][:, 1] == 0) and targets["heatmap"][:, 0].max() > 0.9
    write_h5(tmp_path / "p.h5", rng.normal(0, 40, (4, 3, size, size)).astype(np.float32), labels,
             lambda _: targets)
    (tmp_path / "p.txt").write_text(f"{tmp_path / 'p.h5'}\n")
    write_net(heatmap_net(k, size=size, train=(tmp_path / "p.txt", tmp_path / "p.txt"), batch=4, test_batch=4,
                          width=8, masked=True), tmp_path / "train.prototxt")
    net = caffe.Net(str(tmp_path / "train.prototxt"), caffe.TRAIN)
    net.forward()
    net.backward()
    grad = net.blobs["heatmaps"].diff                      # d loss / d heatmaps, (N, K, H, W)
    seen = net.blobs["heatmap_mask"].data                  # the batch's masks (HDF5Data shuffles rows)
    assert sorted(map(tuple, seen)) == sorted(map(tuple, mask))
    assert np.all(grad[seen == 0] == 0) and all(np.abs(g).max() > 0 for g in grad[seen == 1])
    w, b = net.params["heatmaps"]
    assert np.all(w.diff[1] == 0) and b.diff[1] == 0 and np.abs(w.diff[0]).max() > 0
