"""The repository's layout rules (issue 20's end conditions that are cheap to state).

* **No absolute machine path in the code.**  Every .py, .sh and .toml file under netdef/,
  netdef_cli/, tests/ and scripts/ (those git tracks or would track: ignored files are skipped)
  is read as text -- code, comments and docstrings alike -- and fails on a path that begins at a
  top-level folder holding one machine's or one user's files: work, root, home, tmp, var/tmp,
  Users, mnt, media, scratch, data or srv.  "Begins" means the slash is at the start of a line,
  after whitespace, a quote, a backquote or one of ``=([{,:;`` -- or right after ``file://``;
  so URLs (``https://host/home/...``) and relative paths (``a/tmp/b``, ``../shared``) do not
  count, and ``/tmpfs`` or ``/database`` are other names.  The folders the operating system
  defines (``/dev/null``, ``/proc/self/maps``, ``/sys/fs/cgroup``, ``/etc``, shebangs under
  ``/usr/bin``, Debian's dataset folder ``/usr/share/datasets`` that ``netdef data get`` reads
  on purpose) are the same on every machine and allowed.  The shared folder is found by
  tests/shared_paths.py alone: $NETDEF_SHARED, else ../shared beside the repository.  (This
  file is not scanned: its examples of the rule are such paths.)
* No import of ``netdef.deploy`` from netdef/io; none of ``netdef.layers.vision`` from
  netdef/deploy or netdef/backend (imports are read with :mod:`ast`, relative ones resolved,
  function-level ones included).
* No file named ``*_extra*`` in netdef/, netdef_cli/ or tests/.
* No import of ``netdef.layers`` inside netdef/backend, and none among the CUDA modules that
  goes round in a cycle.
* netdef/layers/misc.py is gone (dissolved into layers/vision.py and layers/utility.py).
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("netdef", "netdef_cli", "tests", "scripts")

MACHINE_FOLDERS = ("work", "root", "home", "tmp", "var/tmp", "Users", "mnt", "media",
                   "scratch", "data", "srv")
MACHINE_PATH = re.compile(
    r"(?:^|(?<=[\s'\"`=(\[{,:;])|(?<=file://))"
    r"/(?:" + "|".join(re.escape(f) for f in MACHINE_FOLDERS) + r")"
    r"(?=/|['\"`\s:;,)\]}]|$)", re.MULTILINE)


def repo_files(*tops: str) -> list[str]:
    """Files under ``tops`` (repository-relative, '/'-separated) that git tracks or would
    track (untracked but not ignored) and that exist; without git, every file outside
    __pycache__ and hidden folders."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard", "--", *tops], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        names = sorted({n for n in out.split("\0") if n})
    except (OSError, subprocess.CalledProcessError):
        names = []
        for top in tops:
            for d, dirs, files in os.walk(os.path.join(REPO, top)):
                dirs[:] = [x for x in dirs if x != "__pycache__" and not x.startswith(".")]
                names += [os.path.relpath(os.path.join(d, f), REPO).replace(os.sep, "/")
                          for f in files]
    return [n for n in names if os.path.isfile(os.path.join(REPO, n))]


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each absolute machine path in ``text`` (the rule above)."""
    return [(text.count("\n", 0, m.start()) + 1,
             text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0].strip())
            for m in MACHINE_PATH.finditer(text)]


def imported_modules(path: str) -> set[str]:
    """Absolute names of the modules a file imports (``from a import b`` gives a and a.b)."""
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    package = rel.rsplit(".", 1)[0] if not rel.endswith("__init__") else rel[:-9]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def imports_of(folder: str, target: str) -> list[str]:
    """'file: module' for each import of ``target`` (or a submodule) by .py files in folder."""
    hits = []
    for name in repo_files(folder):
        if name.endswith(".py"):
            for mod in sorted(imported_modules(os.path.join(REPO, name))):
                if mod == target or mod.startswith(target + "."):
                    hits.append(f"{name}: {mod}")
    return hits


@pytest.mark.parametrize("text,hit", [
    ('SHARED = "/work/shared"', True),
    ("p = os.path.join('/home/user', 'x')", True),
    ("fallback=/root/data/x.lmdb", True),
    ("TMP = '/tmp'", True),
    ("tempdir: /var/tmp/netdef", True),
    ("url = 'file:///scratch/x'", True),
    ("--data /data/imagenet", True),
    ("#!/usr/bin/env python", False),
    ("open('/dev/null'); open(\"/proc/self/maps\")", False),
    ("system_folders=('/usr/share/datasets/fashion-mnist',)", False),
    ("'https://example.org/home/tmp/x'", False),
    ("os.path.join(REPO, '..', 'shared'); 'a/tmp/b'; './data/x'", False),
    ("'/tmpfs'; '/database'; '/homework'", False),
])
def test_machine_path_rule(text, hit):
    assert bool(machine_paths(text)) == hit, text


def test_no_absolute_machine_path():
    files = [n for n in repo_files(*SCANNED) if n.endswith((".py", ".sh", ".toml"))
             and n != "tests/test_layout.py"]
    assert any(n == "tests/shared_paths.py" for n in files) and len(files) > 50
    bad = []
    for name in files:
        with open(os.path.join(REPO, name), encoding="utf-8", errors="replace") as f:
            bad += [f"{name}:{ln}: {line}" for ln, line in machine_paths(f.read())]
    assert bad == [], "absolute machine paths (locate ../shared with tests/shared_paths.py):\n" \
        + "\n".join(bad)


def test_shared_folder_env_then_beside_repo(tmp_path):
    """$NETDEF_SHARED wins when it holds corpus/; else ../shared beside the repository."""
    import shared_paths
    (tmp_path / "corpus").mkdir()
    script = os.path.join(REPO, "tests", "shared_paths.py")

    def located(env_value):
        env = dict(os.environ, NETDEF_SHARED=env_value)
        return subprocess.run([sys.executable, script], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert located(str(tmp_path)) == str(tmp_path)
    beside = shared_paths.BESIDE_REPO
    assert beside == os.path.normpath(os.path.join(REPO, "..", "shared"))
    want = beside if os.path.isdir(os.path.join(beside, "corpus")) else ""
    assert located(str(tmp_path / "corpus")) == want      # no corpus/ inside: not it


def test_io_does_not_import_deploy():
    assert imports_of("netdef/io", "netdef.deploy") == []


@pytest.mark.parametrize("folder", ["netdef/deploy", "netdef/backend"])
def test_no_layer_module_import_of_vision(folder):
    assert imports_of(folder, "netdef.layers.vision") == []


def test_import_reader_resolves_relative_imports():
    mods = imported_modules(os.path.join(REPO, "netdef", "deploy", "frozen.py"))
    assert "netdef.io.weights.check_blob" in mods and "netdef.proto.pb" in mods


def test_no_extra_files():
    bad = [n for n in repo_files("netdef", "netdef_cli", "tests")
           if "_extra" in n.rsplit("/", 1)[-1]]
    assert bad == []


def test_backend_imports_nothing_from_layers_and_cuda_has_no_cycle():
    cuda_dir = os.path.join(REPO, "netdef", "backend", "cuda")
    graph = {}
    for n in repo_files("netdef/backend"):
        if not n.endswith(".py"):
            continue
        mods = imported_modules(os.path.join(REPO, n))
        assert not [m for m in mods if m == "netdef.layers" or m.startswith("netdef.layers.")], n
        if n.startswith("netdef/backend/cuda/"):
            me = n[:-3].replace("/", ".").removesuffix(".__init__")
            graph[me] = {m.rsplit(".", 1)[0] if m.rsplit(".", 1)[0] in
                         {x[:-3].replace("/", ".") for x in repo_files("netdef/backend/cuda")}
                         else m for m in mods if m.startswith("netdef.backend.cuda.")}
    # depth-first search for a cycle among the CUDA modules
    state = {}

    def visit(m, path):
        state[m] = 1
        for d in graph.get(m, ()):
            if d == m or d not in graph:
                continue
            assert state.get(d) != 1, f"import cycle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[m] = 2
    for m in graph:
        if m not in state:
            visit(m, [m])
    assert os.path.isdir(cuda_dir) and len(graph) >= 10


def test_layers_misc_dissolved():
    assert not os.path.exists(os.path.join(REPO, "netdef", "layers", "misc.py"))
