"""Data layers reading real sources: LMDB (Data) and image lists (ImageData)."""
import os

import numpy as np
import pytest

from shared_paths import DATA
from netdef.config import net_from_text
from netdef.data.mnist import read_idx_images, read_idx_labels
from netdef.layers import TEST, TRAIN
from netdef.net import Net

pytest.importorskip("lmdb")
pytest.importorskip("PIL")


def test_data_layer_reads_mnist_lmdb_with_transform(tmp_path, monkeypatch):
    from netdef.data.lmdb_source import write_lmdb
    imgs = read_idx_images(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz"))[:10]
    labels = read_idx_labels(os.path.join(DATA, "mnist", "t10k-labels-idx1-ubyte.gz"))[:10]
    write_lmdb(str(tmp_path / "db"), zip(imgs, labels.tolist()))
    text = f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
      data_param {{ source: "{tmp_path / 'db'}" batch_size: 4 backend: LMDB }}
      transform_param {{ scale: 0.5 crop_size: 20 mean_value: 10 }} }}"""
    net = Net(net_from_text(text), TEST)
    assert net.blobs["data"].shape == (4, 1, 20, 20)      # shape read from the source
    for start in (0, 4, 8):
        net.forward()
        idx = [(start + k) % 10 for k in range(4)]       # wraps around at the end
        ref = (imgs[idx, :, 4:24, 4:24].astype(np.float32) - 10) * 0.5   # centre crop in TEST
        np.testing.assert_array_equal(net.blobs["data"].data, ref)
        np.testing.assert_array_equal(net.blobs["label"].data, labels[idx])
    layer = net.layers[0]
    assert layer.data_position() == 2
    layer.set_data_position(7)
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, labels[[7, 8, 9, 0]])


def test_image_data_layer_reads_png_list(tmp_path):
    from PIL import Image
    samples = sorted(f for f in os.listdir(os.path.join(DATA, "samples")) if f.startswith("mnist_"))[:6]
    lines = [f"{s} {s.split('_')[-1][0]}" for s in samples]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    root = os.path.join(DATA, "samples") + "/"
    text = f"""layer {{ name: "d" type: "ImageData" top: "data" top: "label"
      image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{root}" batch_size: 3
                          is_color: false }} }}"""
    net = Net(net_from_text(text), TRAIN)
    assert net.blobs["data"].shape == (3, 1, 28, 28)
    net.forward()
    for k in range(3):
        ref = np.asarray(Image.open(root + samples[k]).convert("L"), dtype=np.float32)
        np.testing.assert_array_equal(net.blobs["data"].data[k, 0], ref)
    np.testing.assert_array_equal(net.blobs["label"].data, [int(l.split()[1]) for l in lines[:3]])


def test_convert_imageset_and_compute_mean(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from netdef.data.binaryproto import read_mean
    from netdef.data.lmdb_source import LMDBSource
    from netdef_cli.main import cli
    root = os.path.join(DATA, "samples")
    names = sorted(f for f in os.listdir(root) if f.startswith("mnist_"))[:5]
    (tmp_path / "list.txt").write_text("".join(f"{n} {k}\n" for k, n in enumerate(names)))
    r = CliRunner().invoke(cli, ["data", "convert-imageset", root, str(tmp_path / "list.txt"),
                                 str(tmp_path / "db"), "--gray"])
    assert r.exit_code == 0, r.output
    src = LMDBSource(str(tmp_path / "db"))
    assert len(src) == 5 and src.key(0) == f"00000000_{names[0]}".encode()
    imgs = [np.asarray(Image.open(os.path.join(root, n)).convert("L"), np.float64) for n in names]
    r = CliRunner().invoke(cli, ["data", "compute-mean", str(tmp_path / "db"),
                                 str(tmp_path / "mean.binaryproto")])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(read_mean(str(tmp_path / "mean.binaryproto"))[0],
                               np.mean(imgs, axis=0), rtol=1e-6)
