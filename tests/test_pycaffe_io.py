"""caffe.io (netdef.deploy.preprocess), Classifier and Detector against independent float64
references of the rules stated in netdef/deploy/preprocess.py's docstring."""
import glob
import os

import numpy as np
import pytest
from shared_paths import DATA

import netdef.caffe as caffe
from netdef.errors import ShapeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET_DEPLOY = os.path.join(REPO, "model_zoo", "lenet", "lenet.prototxt")
WEIGHTS = os.path.join(DATA, "caffe", "lenet", "lenet_iter_10000.caffemodel")


def _bilinear_ref(im, oh, ow):
    """Half-pixel-centre bilinear resize, written pixel by pixel in float64."""
    h, w, k = im.shape
    out = np.zeros((oh, ow, k))
    for i in range(oh):
        y = min(max((i + 0.5) * h / oh - 0.5, 0.0), h - 1.0)
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        for j in range(ow):
            x = min(max((j + 0.5) * w / ow - 0.5, 0.0), w - 1.0)
            x0 = int(np.floor(x))
            x1 = min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * im[y0, x0] + (1 - dy) * dx * im[y0, x1]
                         + dy * (1 - dx) * im[y1, x0] + dy * dx * im[y1, x1])
    return out


@pytest.mark.parametrize("shape,new", [((5, 7, 3), (11, 4)), ((8, 8, 1), (3, 13)),
                                       ((4, 6, 2), (4, 6)), ((9, 3, 3), (2, 2))])
def test_resize_image_is_half_pixel_bilinear(shape, new):
    im = np.random.default_rng(0).random(shape)
    out = caffe.io.resize_image(im, new)
    assert out.dtype == np.float32 and out.shape == new + (shape[2],)
    np.testing.assert_allclose(out, _bilinear_ref(im, *new), rtol=1e-6, atol=1e-7)
    # a constant image stays constant, whatever the size
    np.testing.assert_allclose(caffe.io.resize_image(np.full(shape, 0.25), new), 0.25)


def test_resize_image_nearest():
    im = np.arange(12, dtype=np.float64).reshape(3, 4, 1)
    out = caffe.io.resize_image(im, (6, 2), interp_order=0)
    # rows: floor((i + .5) * 3 / 6) = 0,0,1,1,2,2; columns: floor((j + .5) * 2) = 1, 3
    assert out[:, :, 0].tolist() == [[1, 3], [1, 3], [5, 7], [5, 7], [9, 11], [9, 11]]


def test_oversample_takes_corners_centre_and_mirrors():
    ims = np.random.default_rng(1).random((2, 6, 7, 3)).astype(np.float32)
    crops = caffe.io.oversample(ims, (4, 3))
    assert crops.shape == (20, 4, 3, 3)
    starts = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
    for n in range(2):
        for j, (y, x) in enumerate(starts):
            np.testing.assert_array_equal(crops[10 * n + j], ims[n, y:y + 4, x:x + 3])
            np.testing.assert_array_equal(crops[10 * n + 5 + j],
                                          ims[n, y:y + 4, x:x + 3][:, ::-1])
    np.testing.assert_array_equal(caffe.io.center_crop(ims, (4, 3)), ims[:, 1:5, 2:5])
    with pytest.raises(ShapeError, match="does not fit"):
        caffe.io.oversample(ims, (7, 3))


def test_transformer_order_and_inverse():
    rng = np.random.default_rng(2)
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    mean = np.array([104.0, 117.0, 123.0])
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    im = rng.random((8, 10, 3))                    # resized to 4 x 5 first
    x = t.preprocess("data", im)
    ref = _bilinear_ref(im, 4, 5).transpose(2, 0, 1)[[2, 1, 0]] * 255.0
    ref = (ref - mean[:, None, None]) * 0.5
    assert x.dtype == np.float32 and x.shape == (3, 4, 5)
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-4)
    back = t.deprocess("data", x)
    np.testing.assert_allclose(back, _bilinear_ref(im, 4, 5), rtol=1e-5, atol=1e-6)
    # a mean image of the input's size
    m = rng.random((3, 4, 5))
    t.set_mean("data", m)
    np.testing.assert_allclose(t.preprocess("data", im),
                               (_bilinear_ref(im, 4, 5).transpose(2, 0, 1)[[2, 1, 0]] * 255
                                - m) * 0.5, rtol=1e-5, atol=1e-4)
    with pytest.raises(ShapeError, match="mean values"):
        t.set_mean("data", [1.0, 2.0])
    with pytest.raises(ShapeError, match="mean of shape"):
        t.set_mean("data", np.zeros((3, 2, 2)))
    with pytest.raises(ShapeError, match="channel swap"):
        t.set_channel_swap("data", (0, 1))
    with pytest.raises(Exception, match="not one of its inputs"):
        t.preprocess("label", im)


def test_load_image_matches_the_png():
    from PIL import Image
    path = sorted(glob.glob(os.path.join(DATA, "samples", "*.png")))[0]
    raw = np.asarray(Image.open(path).convert("RGB"), np.float64) / 255
    im = caffe.io.load_image(path)
    assert im.dtype == np.float32 and im.shape == raw.shape
    np.testing.assert_allclose(im, raw, atol=1e-7)
    gray = caffe.io.load_image(path, color=False)
    assert gray.shape == raw.shape[:2] + (1,) and 0 <= gray.min() <= gray.max() <= 1


def test_blobproto_and_datum_conversions():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    d = rng.standard_normal((2, 3, 4)).astype(np.float32)
    bp = caffe.io.array_to_blobproto(a, d)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(bp), a)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(bp, return_diff=True), d)
    legacy = caffe.proto.caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3,
                                            data=[1, 2, 3, 4, 5, 6])
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    s = caffe.io.arraylist_to_blobprotovector_str([a, a[0]])
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    assert [b.shape for b in back] == [(2, 3, 4), (3, 4)]
    np.testing.assert_array_equal(back[1], a[0])
    u = rng.integers(0, 256, (3, 2, 5)).astype(np.uint8)
    du = caffe.io.array_to_datum(u, 7)
    assert du.data == u.tobytes() and du.label == 7 and not du.float_data
    np.testing.assert_array_equal(caffe.io.datum_to_array(du), u)
    df = caffe.io.array_to_datum(a[:1].reshape(1, 3, 4))
    assert not df.HasField("label") and len(df.float_data) == 12
    np.testing.assert_array_equal(caffe.io.datum_to_array(df), a[:1].reshape(1, 3, 4))


def _digits(n):
    import gzip
    with gzip.open(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n] / 255.0


def test_classifier_centre_and_oversample_against_the_net():
    """Classifier(LeNet): inputs resized to image_dims, crops, the net's probabilities
    averaged over the 10 crops; computed here independently through Net.forward."""
    ims = _digits(3)
    clf = caffe.Classifier(LENET_DEPLOY, WEIGHTS, image_dims=(32, 32), raw_scale=1.0)
    p = clf.predict(list(ims), oversample=True)
    assert p.shape == (3, 10)
    net = caffe.Net(LENET_DEPLOY, WEIGHTS, caffe.TEST)
    for n, im in enumerate(ims):
        big = _bilinear_ref(im, 32, 32)
        crops = []
        for y, x in [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]:
            crops.append(big[y:y + 28, x:x + 28])
        crops += [c[:, ::-1] for c in crops]
        batch = np.stack([c.transpose(2, 0, 1) for c in crops]).astype(np.float32)
        net.blobs["data"].reshape(*batch.shape)
        ref = net.forward(data=batch)["prob"].mean(axis=0)
        np.testing.assert_allclose(p[n], ref, rtol=1e-4, atol=1e-6)
    centre = caffe.Classifier(LENET_DEPLOY, WEIGHTS).predict(list(ims), oversample=False)
    net.blobs["data"].reshape(3, 1, 28, 28)
    ref = net.forward(data=ims.transpose(0, 3, 1, 2).astype(np.float32))["prob"]
    np.testing.assert_allclose(centre, ref, rtol=1e-4, atol=1e-6)
    assert (centre.argmax(1) == [7, 2, 1]).all()               # MNIST's first test digits


def test_detector_crops_with_context_padding(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "im.png")
    det = caffe.Detector(LENET_DEPLOY, WEIGHTS, mean=np.array([0.5]), context_pad=4)
    im = caffe.io.load_image(str(tmp_path / "im.png"), color=False)
    c = det.crop(im, (0, 0, 20, 20))
    # the window fills the central 20 x 20 of the 28 x 28 crop; outside: the mean pixel
    assert c.shape == (28, 28, 1)
    np.testing.assert_allclose(c[4:24, 4:24, 0], img / 255.0, atol=1e-6)
    np.testing.assert_allclose(c[:4], 0.5)
    np.testing.assert_allclose(c[:, 24:], 0.5)
    det0 = caffe.Detector(LENET_DEPLOY, WEIGHTS)
    np.testing.assert_array_equal(det0.crop(im, (2, 3, 9, 15)), im[2:9, 3:15])
    # detect_windows: one dict per window with the net's prediction for the crop
    out = det0.detect_windows([(str(tmp_path / "im.png"), [(0, 0, 20, 20), (2, 3, 16, 17)])])
    assert [o["filename"] for o in out] == [str(tmp_path / "im.png")] * 2
    crop = det0.transformer.preprocess("data", im[2:16, 3:17])
    net = caffe.Net(LENET_DEPLOY, WEIGHTS, caffe.TEST)
    net.blobs["data"].reshape(1, 1, 28, 28)
    ref = net.forward(data=crop[None])["prob"][0]
    np.testing.assert_allclose(out[1]["prediction"], ref, rtol=1e-4, atol=1e-6)
    assert out[1]["window"].tolist() == [2, 3, 16, 17]


def test_load_image_errors_name_the_file_and_the_pixel_limit_applies(tmp_path):
    from PIL import Image

    from netdef.data.datum import set_max_pixels
    from netdef.errors import ConfigError, FileFormatError
    missing = tmp_path / "nope.png"
    with pytest.raises(ConfigError, match="not found") as e:
        caffe.io.load_image(str(missing))
    assert "nope.png" in str(e.value)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(FileFormatError) as e:
        caffe.io.load_image(str(bad))
    assert "bad.png" in str(e.value)
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "big.png")
    prev = set_max_pixels(1999)
    try:
        with pytest.raises(FileFormatError, match="2,000 pixels"):
            caffe.io.load_image(str(tmp_path / "big.png"))
    finally:
        set_max_pixels(prev)
    assert caffe.io.load_image(str(tmp_path / "big.png")).shape == (40, 50, 3)


def test_resize_and_transformer_refuse_what_they_cannot_do():
    im = np.zeros((4, 4, 1))
    with pytest.raises(Exception, match="interp_order 3"):
        caffe.io.resize_image(im, (2, 2), interp_order=3)
    with pytest.raises(ShapeError, match="must be positive"):
        caffe.io.resize_image(im, (0, 2))
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(ShapeError, match="transpose"):
        t.set_transpose("data", (0, 1))
    # without a transpose, an item must already be C x H x W of the input's size
    with pytest.raises(ShapeError, match="set_transpose"):
        t.preprocess("data", np.zeros((8, 10, 3)))
    x = np.random.default_rng(5).random((3, 4, 5))
    t.set_raw_scale("data", 2.0)
    np.testing.assert_allclose(t.preprocess("data", x), x * 2.0, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", x)), x, rtol=1e-6)


def test_preprocess_and_caffe_io_import_no_heavy_modules():
    import subprocess
    import sys
    code = ("import sys\n"
            "import netdef.deploy.preprocess, netdef.caffe.io\n"
            "print(sorted(k for k in ('numba', 'h5py', 'lmdb') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
