"""`netdef caffe TOOL ARGS...`: Caffe's command-line tools with their own argument forms, so a
Caffe shell script needs one word changed (`caffe train -solver s.prototxt` -> `netdef caffe
train -solver s.prototxt`; `convert_imageset -resize_height=256 ROOT/ LIST DB` -> `netdef caffe
convert_imageset ...`).

``train``, ``test``, ``time`` and ``device_query`` are netdef's commands (gflags' spellings are
netdef's already: see netdef_cli.main.caffe_spelling); the others map their positional
arguments and gflags onto netdef's: ``convert_imageset``, ``compute_image_mean``,
``extract_features``, ``upgrade_net_proto_text``, ``upgrade_net_proto_binary``,
``upgrade_solver_proto_text``.  glog's own flags (``-logtostderr``, ``-log_dir`` ...) are
accepted and ignored: netdef logs to stderr.
"""
from __future__ import annotations

import click

from netdef.errors import ConfigError

from .app import cli, user_errors

RUN_TOOLS = {"train": "train", "test": "test", "time": "time", "device_query": "device-query",
             "device-query": "device-query"}
OTHER_TOOLS = ("convert_imageset", "compute_image_mean", "extract_features",
               "upgrade_net_proto_text", "upgrade_net_proto_binary",
               "upgrade_solver_proto_text")
#: glog flags (after netdef's spelling: --log-dir...) and whether they take a value
GLOG_FLAGS = {"--logtostderr": False, "--alsologtostderr": False, "--colorlogtostderr": False,
              "--log-dir": True, "--minloglevel": True, "--stderrthreshold": True,
              "--v": True}


def _split(args, booleans=(), valued=()):
    """(flags {name: value}, positionals) from gflags-style args already in netdef's
    spelling (``--flag``, ``--flag=value``, ``--flag value``); booleans take ``=true/false``."""
    flags, pos = {}, []
    it = iter(args)
    for a in it:
        if not a.startswith("--"):
            pos.append(a)
            continue
        name, eq, value = a.partition("=")
        if name in GLOG_FLAGS:
            if GLOG_FLAGS[name] and not eq:
                next(it, None)
            continue
        if name in booleans:
            v = value.lower() if eq else "true"
            if v not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{name}={value}: a boolean flag takes true or false")
            flags[name] = v in ("true", "1", "yes")
        elif name in valued:
            if not eq:
                value = next(it, None)
                if value is None:
                    raise ConfigError(f"{name} needs a value")
            flags[name] = value
        else:
            known = ", ".join(sorted(set(booleans) | set(valued)))
            raise ConfigError(f"unknown flag {name} (this tool takes {known or 'no flags'})")
    return flags, pos


def _positionals(tool, pos, low, high, usage):
    if not low <= len(pos) <= high:
        raise ConfigError(f"{tool}: expected {usage}, got {len(pos)} arguments")


def _run(argv):
    cli.main(args=argv, prog_name="netdef")


def _convert_imageset(args):
    f, pos = _split(args, booleans=("--gray", "--shuffle", "--encoded", "--check-size"),
                    valued=("--resize-height", "--resize-width", "--backend",
                            "--encode-type"))
    _positionals("convert_imageset", pos, 3, 3, "ROOTFOLDER/ LISTFILE DB_NAME")
    argv = ["data", "convert-imageset", *pos]
    for b in ("--gray", "--shuffle", "--encoded", "--check-size"):
        if f.get(b):
            argv.append(b)
    for v in ("--resize-height", "--resize-width", "--backend", "--encode-type"):
        if v == "--encode-type" and not f.get("--encoded"):
            continue                # Caffe ignores encode_type without encoded
        if f.get(v) not in (None, ""):
            argv += [v, f[v]]
    _run(argv)


def _compute_image_mean(args):
    f, pos = _split(args, valued=("--backend",))
    _positionals("compute_image_mean", pos, 1, 2, "INPUT_DB [OUTPUT_FILE]")
    if f.get("--backend", "lmdb") != "lmdb":
        raise ConfigError("compute_image_mean: netdef reads LMDB only (-backend lmdb)")
    if len(pos) == 2:
        return _run(["data", "compute-mean", *pos])
    # no OUTPUT_FILE: Caffe's tool only logs the per-channel means
    import logging

    from netdef.data.lmdb_source import image_mean
    from netdef_cli.logfmt import setup_logging
    setup_logging()
    mean, n = image_mean(pos[0])
    log = logging.getLogger("netdef.data")
    log.info(f"Processed {n} files.")
    for c, v in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        log.info(f"mean_value channel [{c}]: {v:g}")


def _extract_features(args):
    import logging

    from netdef.features import extract_features
    from netdef.net import PHASES
    from netdef_cli.logfmt import setup_logging
    from netdef_cli.run import _check_gpu, _model_net
    _, pos = _split(args)
    usage = ("pretrained_net_param feature_extraction_proto_file blob1[,blob2,...] "
             "db1[,db2,...] num_mini_batches db_type [CPU|GPU] [DEVICE_ID]")
    _positionals("extract_features", pos, 6, 8, usage)
    weights, model, blobs, dbs, n, db_type = pos[:6]
    blobs, dbs = blobs.split(","), dbs.split(",")
    if len(blobs) != len(dbs):
        raise ConfigError(f"extract_features: {len(blobs)} blobs but {len(dbs)} databases "
                          f"(one per blob)")
    if db_type.lower() != "lmdb":
        raise ConfigError(f"extract_features: db_type {db_type}: netdef writes lmdb (or use "
                          f"`netdef extract-features --format hdf5|npy`)")
    try:
        n = int(n)
    except ValueError:
        raise ConfigError(f"extract_features: num_mini_batches {n!r} is not a number") from None
    mode = pos[6].upper() if len(pos) > 6 else "CPU"
    if mode not in ("CPU", "GPU"):
        raise ConfigError(f"extract_features: the mode is CPU or GPU, not {pos[6]}")
    setup_logging()
    gid = _check_gpu(pos[7] if len(pos) > 7 else "0") if mode == "GPU" else None
    net = _model_net(model, weights, PHASES["TEST"], None, (), {}, "float32")
    if gid is not None:
        net.to_device(gid)
    paths = extract_features(net, blobs, n, dict(zip(blobs, dbs)), "lmdb")
    log = logging.getLogger("netdef.features")
    for p in paths:
        log.info(f"Wrote {p}")
    log.info("Successfully extracted the features!")


def _upgrade(tool, args):
    from netdef.config import load_net, load_solver
    from netdef.io.files import write_file
    from netdef.config import to_text
    _, pos = _split(args)
    _positionals(tool, pos, 2, 2, "INPUT_FILE OUTPUT_FILE")
    src, dst = pos
    if tool == "upgrade_net_proto_binary":
        d = load_net(src, fmt="binary")
        data = d.message.SerializeToString()
    elif tool == "upgrade_net_proto_text":
        d = load_net(src, fmt="prototxt")
        data = to_text(d.message, "prototxt")
    else:
        d = load_solver(src, fmt="prototxt")
        data = to_text(d.message, "prototxt")
    for note in d.notes or ["already in the current format"]:
        click.echo(f"note: {note}", err=True)
    write_file(dst, data)
    click.echo(f"Wrote upgraded {'solver' if 'solver' in tool else 'NetParameter'} to {dst}",
               err=True)


@cli.command("caffe", context_settings=dict(ignore_unknown_options=True,
                                            allow_interspersed_args=False,
                                            help_option_names=[]))
@click.argument("tool", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def caffe_cmd(tool, args):
    """Caffe's tools with their own arguments: train, test, time, device_query,
    convert_imageset, compute_image_mean, extract_features, upgrade_net_proto_text,
    upgrade_net_proto_binary, upgrade_solver_proto_text."""
    if tool is None or tool in ("-h", "--help", "help"):
        click.echo("usage: netdef caffe TOOL ARGS... (tools: "
                   f"{', '.join(list(RUN_TOOLS)[:4] + list(OTHER_TOOLS))})")
        return
    from netdef_cli.main import caffe_spelling
    args = caffe_spelling(["caffe", *args])[1:]      # also when called as cli(), not main()
    t = tool.replace("-", "_")
    if tool in RUN_TOOLS or t in RUN_TOOLS:
        args = [a for a in _glog_free(args)]
        return _run([RUN_TOOLS.get(tool, RUN_TOOLS.get(t)), *args])
    if t == "convert_imageset":
        return _convert_imageset(args)
    if t == "compute_image_mean":
        return _compute_image_mean(args)
    if t == "extract_features":
        return _extract_features(args)
    if t in OTHER_TOOLS:
        return _upgrade(t, args)
    raise ConfigError(f"unknown Caffe tool '{tool}' (tools: "
                      f"{', '.join(list(RUN_TOOLS)[:4] + list(OTHER_TOOLS))})")


def _glog_free(args):
    it = iter(args)
    for a in it:
        name = a.partition("=")[0]
        if name in GLOG_FLAGS:
            if GLOG_FLAGS[name] and "=" not in a:
                next(it, None)
            continue
        yield a
