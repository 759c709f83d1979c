"""`netdef data get`: the official dataset files — where they come from, how they are checked —
and their conversion to Caffe-layout LMDBs.

Sources, in order: ``--from DIR`` (only that, when given); a system folder that already holds
the files (Debian's ``/usr/share/datasets/...``); the canonical mirrors; and, for
Fashion-MNIST, the Debian package ``dataset-fashion-mnist`` (installed with apt-get when
running as root, otherwise unpacked from ``apt-get download`` into the cache).  Every file is
checked against the published MD5 — of the decompressed IDX bytes for MNIST-style sets, so
re-gzipped copies (Debian's, PyPI's) pass too; of the archive for CIFAR-10.

Downloads go to ``$NETDEF_CACHE`` (default ``~/.cache/netdef``) ``/datasets/<name>/``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FileFormatError

__all__ = ["DATASETS", "Dataset", "cache_dir", "get_dataset", "lmdb_paths"]


@dataclass(frozen=True)
class Dataset:
    name: str
    prefix: str                  # <out>/<prefix>_train_lmdb, <prefix>_test_lmdb
    default_out: str
    files: dict[str, str]        # file name -> md5 (IDX: of the decompressed bytes)
    mirrors: tuple[str, ...]
    kind: str = "idx"            # "idx" | "cifar10"
    system_folders: tuple[str, ...] = ()
    debian_package: str | None = None
    notes: dict = field(default_factory=dict)


MNIST = Dataset(
    name="mnist", prefix="mnist", default_out="examples/mnist",
    files={"train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
           "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
           "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
           "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"},
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"))

FASHION_MNIST = Dataset(
    name="fashion-mnist", prefix="fashion_mnist", default_out="examples/fashion_mnist",
    files={"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
           "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
           "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
           "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
    system_folders=("/usr/share/datasets/fashion-mnist",),
    debian_package="dataset-fashion-mnist")

CIFAR10 = Dataset(
    name="cifar10", prefix="cifar10", default_out="examples/cifar10",
    files={"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    kind="cifar10")

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, CIFAR10)}

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)


def cache_dir() -> str:
    return os.environ.get("NETDEF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "netdef")


def lmdb_paths(ds: Dataset, out: str) -> dict[str, str]:
    return {s: os.path.join(out, f"{ds.prefix}_{s}_lmdb") for s in ("train", "test")}


def _say(log, msg):
    (log or (lambda m: print(m, file=sys.stderr)))(msg)


# -- checksums ------------------------------------------------------------------------------

def _md5_file(path: str, *, decompressed: bool) -> str:
    h = hashlib.md5()
    opener = gzip.open if decompressed and _is_gzip(path) else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError) as e:
        raise FileFormatError(f"cannot read ({e})", file=path) from None
    return h.hexdigest()


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def verify(ds: Dataset, name: str, path: str) -> None:
    """Raise unless ``path`` holds the official ``name`` of ``ds``."""
    want = ds.files[name]
    got = _md5_file(path, decompressed=ds.kind == "idx")
    if got != want:
        what = "decompressed content" if ds.kind == "idx" else "file"
        raise FileFormatError(f"not the official {ds.name} {name}: MD5 of its {what} is {got}, "
                              f"expected {want} (pass --no-verify to use it anyway)", file=path)


# -- finding the files ----------------------------------------------------------------------

def _in_folder(ds: Dataset, folder: str) -> dict[str, str] | None:
    """The dataset's files in ``folder`` (``x.gz`` or its uncompressed ``x``), or None when
    some are missing."""
    found = {}
    for name in ds.files:
        for cand in (name, name[:-3] if name.endswith(".gz") else None):
            if cand and os.path.isfile(os.path.join(folder, cand)):
                found[name] = os.path.join(folder, cand)
                break
        else:
            return None
    return found


def _progress(done: int, total: int | None, label: str) -> None:
    if not sys.stderr.isatty():
        return
    if total:
        k = int(30 * done / total)
        sys.stderr.write(f"\r{label} [{'#' * k}{'.' * (30 - k)}] {done / 2**20:.1f}/"
                         f"{total / 2**20:.1f} MiB")
    else:
        sys.stderr.write(f"\r{label} {done / 2**20:.1f} MiB")
    sys.stderr.flush()


def download(url: str, dest: str, *, timeout: float = 30.0) -> None:
    """``url`` -> ``dest`` (through ``dest.part``, renamed when complete)."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    label = os.path.basename(dest)
    with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
        total = r.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        for chunk in iter(lambda: r.read(1 << 20), b""):
            f.write(chunk)
            done += len(chunk)
            _progress(done, total, label)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    os.replace(part, dest)


def _from_mirrors(ds: Dataset, folder: str, log, check: bool) -> tuple[dict | None, list]:
    """Download every missing file into ``folder``; returns (paths, failures)."""
    paths, failures = {}, []
    for name in ds.files:
        dest = os.path.join(folder, name)
        if os.path.isfile(dest):
            try:
                if check:
                    verify(ds, name, dest)
                paths[name] = dest
                continue
            except FileFormatError:
                os.remove(dest)
        for mirror in ds.mirrors:
            url = mirror + name
            try:
                _say(log, f"downloading {url}")
                download(url, dest)
                if check:
                    verify(ds, name, dest)
                paths[name] = dest
                break
            except (OSError, urllib.error.URLError, ValueError) as e:
                failures.append(f"{url} ({getattr(e, 'reason', None) or e})")
            except FileFormatError as e:
                failures.append(f"{url} ({e.message})")
                os.remove(dest)
        else:
            return None, failures
    return paths, failures


def _debian(ds: Dataset, log) -> tuple[dict | None, str]:
    """The files from the Debian package: installed with apt-get as root, else unpacked from
    ``apt-get download`` into the cache.  Returns (paths, what was tried)."""
    pkg, folder = ds.debian_package, ds.system_folders[0]
    apt = shutil.which("apt-get")
    if not apt:
        return None, f"no apt-get here: install the Debian package {pkg} by hand"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        _say(log, f"installing the Debian package {pkg} (apt-get install -y {pkg})")
        cmd = [apt, "install", "-y", "--no-install-recommends", pkg]
        if subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run([apt, "update"], check=False, env=env, stdout=subprocess.DEVNULL)
            subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL)
        found = _in_folder(ds, folder)
        return found, f"apt-get install -y {pkg}"
    # not root: fetch the .deb and unpack it into the cache (no system change)
    work = os.path.join(cache_dir(), "debian", pkg)
    os.makedirs(work, exist_ok=True)
    _say(log, f"fetching the Debian package {pkg} into {work} (not root: not installing it; "
              f"`sudo apt-get install {pkg}` would)")
    r = subprocess.run([apt, "download", pkg], check=False, cwd=work, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    debs = sorted(n for n in os.listdir(work) if n.endswith(".deb"))
    if r.returncode != 0 or not debs or not shutil.which("dpkg-deb"):
        return None, f"sudo apt-get install {pkg}"
    subprocess.run(["dpkg-deb", "-x", debs[-1], "root"], cwd=work, check=False)
    return _in_folder(ds, os.path.join(work, "root", folder.lstrip("/"))), \
        f"apt-get download {pkg}"


def locate(ds: Dataset, src: str | None = None, *, check: bool = True, log=None) -> dict:
    """Paths of the official files of ``ds`` (see the module's docstring for the order)."""
    if src is not None:
        found = _find_given(ds, src)
        if check:
            for name, p in found.items():
                if ds.kind == "idx" or p.endswith(".tar.gz"):
                    verify(ds, name, p)
        return found
    for folder in ds.system_folders:
        found = _in_folder(ds, folder)
        if found:
            _say(log, f"using {ds.name} from {folder}")
            if check:
                for name, p in found.items():
                    verify(ds, name, p)
            return found
    cache = os.path.join(cache_dir(), "datasets", ds.name)
    found, failures = _from_mirrors(ds, cache, log, check)
    if found:
        return found
    tried = "; ".join(failures) or ", ".join(ds.mirrors)
    if ds.debian_package:
        _say(log, f"the {ds.name} mirrors are not reachable ({len(failures)} tried): falling "
                  f"back to the Debian package {ds.debian_package}")
        found, how = _debian(ds, log)
        if found:
            if check:
                for name, p in found.items():
                    verify(ds, name, p)
            return found
        raise ConfigError(f"cannot get {ds.name}: mirrors failed ({tried}) and the Debian "
                          f"package is not available ({how}); install it, or download the "
                          f"files elsewhere and pass --from DIR")
    raise ConfigError(f"cannot download {ds.name}: tried {tried}. Download "
                      f"{', '.join(ds.files)} elsewhere and pass --from DIR")


def _find_given(ds: Dataset, src: str) -> dict:
    if not os.path.isdir(src):
        raise ConfigError(f"--from {src}: no such folder")
    if ds.kind == "cifar10":
        for folder in (src, os.path.join(src, "cifar-10-batches-bin")):
            if all(os.path.isfile(os.path.join(folder, n)) for n in CIFAR_TRAIN + CIFAR_TEST):
                return {"folder": folder}
        tar = os.path.join(src, "cifar-10-binary.tar.gz")
        if os.path.isfile(tar):
            return {"cifar-10-binary.tar.gz": tar}
        raise ConfigError(f"--from {src}: holds neither cifar-10-binary.tar.gz nor the "
                          f"cifar-10-batches-bin files ({', '.join(CIFAR_TRAIN + CIFAR_TEST)})")
    found = _in_folder(ds, src)
    if not found:
        missing = [n for n in ds.files if not (os.path.isfile(os.path.join(src, n)) or
                                               os.path.isfile(os.path.join(src, n[:-3])))]
        raise ConfigError(f"--from {src}: missing {', '.join(missing)} (or their "
                          f"uncompressed forms)")
    return found


# -- conversion -----------------------------------------------------------------------------

def _convert_idx(ds: Dataset, paths: dict, out: str) -> dict[str, int]:
    from .mnist import convert_mnist
    dest = lmdb_paths(ds, out)
    counts = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        counts[split] = convert_mnist(paths[f"{stem}-images-idx3-ubyte.gz"],
                                      paths[f"{stem}-labels-idx1-ubyte.gz"], dest[split])
    return counts


def read_cifar_batch(raw: bytes, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of a label byte and 3×32×32 uint8 (R, G, B planes).
    Returns (images N×3×32×32, labels N)."""
    if not raw or len(raw) % CIFAR_RECORD:
        raise FileFormatError(f"{len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte "
                              f"CIFAR-10 records", file=name or None)
    rec = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0]
    if labels.max() > 9:
        raise FileFormatError(f"label {labels.max()} out of range 0..9: not a CIFAR-10 batch",
                              file=name or None)
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def _cifar_batches(paths: dict):
    """name -> bytes of the six batch files, from a folder or the official archive."""
    if "folder" in paths:
        out = {}
        for n in CIFAR_TRAIN + CIFAR_TEST:
            with open(os.path.join(paths["folder"], n), "rb") as f:
                out[n] = f.read()
        return out
    tar = paths["cifar-10-binary.tar.gz"]
    out = {}
    try:
        with tarfile.open(tar, "r:gz") as t:
            for m in t.getmembers():
                base = os.path.basename(m.name)
                if m.isfile() and base in CIFAR_TRAIN + CIFAR_TEST:
                    out[base] = t.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FileFormatError(f"cannot read the archive ({e})", file=tar) from None
    missing = [n for n in CIFAR_TRAIN + CIFAR_TEST if n not in out]
    if missing:
        raise FileFormatError(f"archive lacks {', '.join(missing)}", file=tar)
    return out


def _convert_cifar(ds: Dataset, paths: dict, out: str) -> dict[str, int]:
    """Caffe's convert_cifar_data (keys "%05d", RGB planes as stored) and compute_image_mean
    on the train set (``<out>/mean.binaryproto``)."""
    from .binaryproto import write_mean
    from .lmdb_source import write_lmdb
    raw = _cifar_batches(paths)
    dest = lmdb_paths(ds, out)
    counts = {}
    total = np.zeros((3, 32, 32), np.float64)
    for split, names in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        parts = [read_cifar_batch(raw[n], n) for n in names]
        imgs = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if split == "train":
            total = imgs.sum(axis=0, dtype=np.float64)
            n_train = len(imgs)
        counts[split] = write_lmdb(dest[split], zip(imgs, labels.tolist()),
                                   key_format="%05d")
    write_mean(os.path.join(out, "mean.binaryproto"), (total / n_train).astype(np.float32))
    return counts


def get_dataset(name: str, out: str | None = None, src: str | None = None, *,
                check: bool = True, log=None) -> dict[str, int]:
    """Write ``<out>/<prefix>_train_lmdb`` and ``_test_lmdb`` (and, for CIFAR-10,
    ``mean.binaryproto``); returns the record counts.  Existing LMDBs are an error."""
    ds = DATASETS[name]
    out = out or ds.default_out
    for p in lmdb_paths(ds, out).values():
        if os.path.exists(p):
            raise ConfigError(f"{p} exists already; remove it to convert again")
    paths = locate(ds, src, check=check, log=log)
    os.makedirs(out, exist_ok=True)
    if ds.kind == "cifar10":
        return _convert_cifar(ds, paths, out)
    return _convert_idx(ds, paths, out)
