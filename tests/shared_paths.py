"""Where the workplace's read-only shared files are: $NETDEF_SHARED, else ../shared beside the
repository -- the one place in the code that knows (the scripts import this file too; there
is no absolute fallback, tests/test_layout.py checks that none creeps back).

``SHARED``, ``CORPUS`` and ``DATA`` are looked up on first use: ``from shared_paths import
CORPUS`` raises RuntimeError when the folder is absent, while :func:`find` with
``required=False`` answers None (for what skips without it).  ``python tests/shared_paths.py``
prints the folder, or nothing (for shell scripts)."""
import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESIDE_REPO = os.path.normpath(os.path.join(_REPO, "..", "shared"))

_SUBDIRS = {"SHARED": (), "CORPUS": ("corpus", "caffe_models"), "DATA": ("data",)}


def find(required: bool = True):
    """The shared folder (absolute; it holds corpus/), or None when absent and not required."""
    for cand in (os.environ.get("NETDEF_SHARED"), BESIDE_REPO):
        if cand and os.path.isdir(os.path.join(cand, "corpus")):
            return os.path.abspath(cand)
    if required:
        raise RuntimeError("the shared corpus was not found: set NETDEF_SHARED to the folder "
                           "holding corpus/ and data/ (default: ../shared beside the "
                           "repository)")
    return None


def __getattr__(name):          # SHARED, CORPUS, DATA (PEP 562: computed when imported)
    if name not in _SUBDIRS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return os.path.join(find(), *_SUBDIRS[name])


if __name__ == "__main__":
    print(find(required=False) or "")
