#!/usr/bin/env python
"""Regenerate ``netdef/proto/netdef_pb2.py`` from ``protos/netdef.proto``.

Usage::

    python scripts/gen_proto.py           # rewrite the committed module
    python scripts/gen_proto.py --check   # exit 1 if the committed module is stale

Generation uses the protoc bundled with ``grpcio-tools`` (pinned in
pyproject.toml, so the output is reproducible).  The proto is compiled with
``-I protos`` so the file registers itself in the descriptor pool as
``netdef.proto`` and the generated module has no import that depends on the
include root.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
PROTO_NAME = "netdef.proto"
OUT_MODULE = ROOT / "netdef" / "proto" / "netdef_pb2.py"


class ProtocError(RuntimeError):
    pass


def generate(out_dir: Path) -> Path:
    """Compile protos/netdef.proto into *out_dir*; return the generated file."""
    try:
        import importlib.resources as ir

        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ProtocError(
            "grpc_tools is not installed; pip install 'grpcio-tools>=1.85,<1.86'"
        ) from exc

    # protoc needs the well-known-types include dir only if the schema imports
    # google/protobuf/*.proto; pass it anyway so future edits keep working.
    wkt_include = str(ir.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{wkt_include}",
        f"--python_out={out_dir}",
        str(PROTO_DIR / PROTO_NAME),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise ProtocError(f"protoc failed with exit status {rc}: {' '.join(args)}")
    produced = out_dir / (Path(PROTO_NAME).stem + "_pb2.py")
    if not produced.is_file():
        raise ProtocError(f"protoc did not produce {produced}")
    return produced


def diff_summary(old: str, new: str, *, max_lines: int = 40) -> str:
    """A short unified diff (committed -> freshly generated)."""
    lines = list(
        difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            fromfile=f"committed/{OUT_MODULE.relative_to(ROOT)}",
            tofile="regenerated",
            lineterm="",
        )
    )
    changed = sum(
        1 for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    )
    head = lines[:max_lines]
    if len(lines) > max_lines:
        head.append(f"... ({len(lines) - max_lines} more diff lines)")
    return f"{changed} changed line(s)\n" + "\n".join(head)


def check() -> tuple[bool, str]:
    """Return (is_current, message) comparing the committed module to a fresh build."""
    with tempfile.TemporaryDirectory(prefix="netdef-proto-") as tmp:
        fresh = generate(Path(tmp)).read_text(encoding="utf-8")
    if not OUT_MODULE.is_file():
        return False, f"{OUT_MODULE.relative_to(ROOT)} does not exist; run scripts/gen_proto.py"
    committed = OUT_MODULE.read_text(encoding="utf-8")
    if committed == fresh:
        return True, f"{OUT_MODULE.relative_to(ROOT)} is up to date"
    return False, (
        f"{OUT_MODULE.relative_to(ROOT)} is stale; run scripts/gen_proto.py\n"
        + diff_summary(committed, fresh)
    )


def regenerate() -> Path:
    with tempfile.TemporaryDirectory(prefix="netdef-proto-") as tmp:
        produced = generate(Path(tmp))
        OUT_MODULE.parent.mkdir(parents=True, exist_ok=True)
        staged = OUT_MODULE.with_suffix(".py.tmp")
        shutil.copyfile(produced, staged)
        os.replace(staged, OUT_MODULE)
    return OUT_MODULE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed module differs from a fresh build",
    )
    ns = ap.parse_args(argv)
    try:
        if ns.check:
            ok, msg = check()
            print(msg)
            return 0 if ok else 1
        path = regenerate()
        print(f"wrote {path.relative_to(ROOT)}")
        return 0
    except ProtocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
