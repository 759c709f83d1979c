"""Where the workplace's read-only shared files are: $NETDEF_SHARED, else ../shared beside the
repository, else /work/shared."""
import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find():
    for cand in (os.environ.get("NETDEF_SHARED"), os.path.join(_REPO, "..", "shared"),
                 "/work/shared"):
        if cand and os.path.isdir(os.path.join(cand, "corpus")):
            return os.path.abspath(cand)
    raise RuntimeError("the shared corpus was not found: set NETDEF_SHARED to the folder "
                       "holding corpus/ and data/")


SHARED = _find()
CORPUS = os.path.join(SHARED, "corpus", "caffe_models")
DATA = os.path.join(SHARED, "data")
