"""Deploy commands: freeze, predict, export caffe / onnx."""
from __future__ import annotations

import json
import os

import click

from .app import cli, parse_input_shapes, user_errors


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return [float(v) for v in value.replace(" ", ",").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas")


def _scale(ctx, param, value):
    if value is None:
        return None
    try:
        if "/" in value:
            a, b = value.split("/", 1)
            return float(a) / float(b)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{value!r}: expected a number (e.g. 0.00390625 or 1/256)")


def _channel_order(ctx, param, value):
    if value is None:
        return None
    order = value.replace(" ", "").upper()
    if order in ("2,1,0", "BGR"):
        return "BGR"
    if order in ("0,1,2", "RGB"):
        return "RGB"
    if order == "GRAY":
        return "GRAY"
    raise click.BadParameter(f"{value!r}: RGB, BGR, GRAY, or classify.py's channel swap "
                             f"2,1,0 (RGB images to a BGR net, Caffe's default) / 0,1,2")


def preprocessing_options(note: str):
    """freeze's preprocessing flags (also predict's, for a Caffe definition with --weights;
    classify.py's spellings --input-scale and --channel-swap are accepted)."""
    opts = [
        click.option("--input-shape", "input_shapes", multiple=True,
                     callback=parse_input_shapes, metavar="BLOB=N,C,H,W",
                     help=f"{note}deploy shape of an input (default: the data layer's, "
                          f"batch 1)"),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help=f"{note}class names, one a line"),
        click.option("--scale", "--input-scale", "scale", callback=_scale, default=None,
                     help=f"{note}input scale after the mean (overrides "
                          f"transform_param.scale), e.g. 1/256"),
        click.option("--mean-file", type=click.Path(dir_okay=False),
                     help=f"{note}mean .binaryproto (overrides transform_param)"),
        click.option("--mean-value", callback=_floats, default=None,
                     help=f"{note}mean value(s), one or one per channel"),
        click.option("--channel-order", "--channel-swap", "channel_order",
                     callback=_channel_order, default=None,
                     help=f"{note}channel order the net was trained on: RGB, BGR (default for "
                          f"3 channels, as Caffe's tools write them), GRAY, or classify.py's "
                          f"2,1,0 / 0,1,2"),
    ]

    def deco(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn
    return deco


@cli.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False),
              help="train/val or deploy definition (prototxt or YAML)")
@click.option("--weights", required=True, help="trained weights (.caffemodel[,more])")
@click.option("-o", "--output", "out", default="model.netdef", show_default=True,
              type=click.Path(dir_okay=False), help="the frozen model file")
@preprocessing_options("")
@click.option("--skip", "skip", multiple=True, help="a pass not to run (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@user_errors
def freeze(model, weights, out, input_shapes, labels, scale, mean_file, mean_value,
           channel_order, skip, as_json):
    """Freeze a trained net into one file for inference (with a before/after report)."""
    from netdef.deploy.freeze import freeze as do_freeze

    res = do_freeze(model, weights, input_shapes=input_shapes, labels=labels, scale=scale,
                    mean_file=mean_file, mean_value=mean_value, channel_order=channel_order,
                    skip=skip)
    size = res.save(out, source=f"model={os.path.basename(model)} weights="
                                f"{','.join(os.path.basename(w) for w in weights.split(','))}")
    if as_json:
        from dataclasses import asdict
        click.echo(json.dumps({"output": out, "bytes": size, "inputs": [
            {"name": i.name, "shape": list(i.shape)} for i in res.model.inputs],
            "outputs": res.model.outputs, "passes": [asdict(r) for r in res.rows]}))
        return
    click.echo(res.report)
    ins = ", ".join(f"{i.name} {'x'.join(map(str, i.shape))} (scale {i.scale:g}"
                    + (f", mean {i.mean_value}" if i.mean_value else "")
                    + (", mean image" if i.mean is not None else "")
                    + (f", {i.channel_order}" if i.channel_order else "") + ")"
                    for i in res.model.inputs)
    click.echo(f"inputs: {ins}")
    click.echo(f"outputs: {', '.join(res.model.outputs)}")
    click.echo(f"wrote {out} ({size:,} bytes)")


def _read_image(path: str, channels: int):
    """An image file as float32 H x W x K pixel values 0..255 (K = 1 or 3, RGB)."""
    import numpy as np

    from netdef.deploy.preprocess import read_pixels
    return read_pixels(path, color=channels != 1).astype(np.float32)


def _load_input(path: str, pred, *, images_dim=None, crops: str = "resize"):
    """An input file as a float batch. Images are resized (netdef.deploy.preprocess: bilinear,
    half-pixel centres) to ``images_dim``, else the mean image's size, else the input's; then
    ``crops``: "resize"/"center" one centre crop of the input's size, "oversample" Caffe's
    10 crops (the caller averages their outputs)."""
    import numpy as np

    from netdef.deploy import preprocess as P
    from netdef.errors import ConfigError, FileFormatError

    if path.lower().endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ConfigError("file not found", file=path) from None
        except (ValueError, OSError) as e:
            raise FileFormatError(f"not a .npy array: {e}", file=path) from None
        if arr.dtype == np.uint8:
            return pred.preprocess(arr if arr.ndim != 4 else list(arr))
        return arr.astype(np.float32)
    c, h, w = pred.input_shape()[1:]
    arr = _read_image(path, c)
    th, tw = h, w
    model = pred.model.deploy.input[0]
    if images_dim is not None:
        th, tw = images_dim
    elif model.HasField("mean"):
        from netdef.io.weights import blob_shape
        ms = blob_shape(model.mean)
        th, tw = ms[-2], ms[-1]
    if th < h or tw < w:
        raise ConfigError(f"--images-dim {th},{tw} is smaller than the model's {h}x{w} input")
    arr = P.resize_image(arr, (th, tw))
    if crops == "oversample":
        return pred.preprocess(list(P.oversample(arr[None], (h, w))))
    return pred.preprocess(P.center_crop(arr[None], (h, w))[0])


def _dims(ctx, param, value):
    if value is None:
        return None
    try:
        dims = [int(v) for v in value.replace(" ", ",").split(",") if v]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) < 1:
        raise click.BadParameter(f"{value!r}: expected H,W (or one size)")
    return dims


def _frozen_in_memory(model, weights, *, input_shapes, labels, scale, mean_file, mean_value,
                      channel_order, raw_scale, allow_python_layers, backend):
    """A Predictor for a Caffe deploy/train_val definition + weights, frozen in memory with
    freeze's passes and preprocessing."""
    from netdef.deploy.freeze import freeze as do_freeze
    from netdef.deploy.frozen import decode, encode
    from netdef.deploy.predictor import Predictor
    if raw_scale is not None:
        # classify.py: pixels in [0, 1] x raw_scale, minus the mean, x input scale; netdef's
        # pixels are 0..255: the same as mean * 255 / raw_scale and scale * raw_scale / 255
        k = raw_scale / 255.0
        scale = (1.0 if scale is None else scale) * k
        if mean_value is not None:
            mean_value = [m / k for m in mean_value]
    res = do_freeze(model, weights, input_shapes=input_shapes, labels=labels, scale=scale,
                    mean_file=mean_file, mean_value=mean_value, channel_order=channel_order)
    data = encode(res.model.to_proto(), res.deploy_message(f"model={os.path.basename(model)}"))
    return Predictor(decode(data, model, allow_python_layers=allow_python_layers), backend)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--weights", default=None,
              help="with a Caffe definition as MODEL: its .caffemodel[,more] (frozen in "
                   "memory, as `netdef freeze` would)")
@click.option("--top-k", "top_k", type=int, default=5, show_default=True)
@click.option("--output", "output_name", default=None, help="which output to rank "
              "(default: the first)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per input")
@click.option("--backend", type=click.Choice(["auto", "numba", "numpy"]), default="auto",
              show_default=True)
@click.option("--allow-python-layers", is_flag=True,
              help="load a frozen file's Python layers (only for files you trust); a Caffe "
                   "definition's are refused before import, as by freeze")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="refuse larger images before decoding them (default 89,478,485, Pillow's)")
@click.option("--oversample", is_flag=True,
              help="Caffe's Classifier: 10 crops (corners, centre, mirrored), outputs averaged")
@click.option("--center-only", is_flag=True, help="one centre crop (the default)")
@click.option("--images-dim", callback=_dims, default=None, metavar="H,W",
              help="resize images to this size before cropping (classify.py's images_dim)")
@preprocessing_options("with --weights: ")
@click.option("--raw-scale", callback=_scale, default=None,
              help="with --weights: classify.py's raw_scale (pixels in [0, 1] times it)")
@user_errors
def predict(model, inputs, weights, top_k, output_name, as_json, backend, allow_python_layers,
            max_pixels, oversample, center_only, images_dim, input_shapes, labels, scale,
            raw_scale, mean_file, mean_value, channel_order):
    """Classify images (PNG/JPEG) or .npy arrays with a frozen model, or with a Caffe
    definition and --weights (frozen in memory)."""
    import numpy as np

    from netdef.deploy import load
    from netdef.errors import ConfigError

    if max_pixels is not None:
        from netdef.data.datum import set_max_pixels
        set_max_pixels(max_pixels)
    if oversample and center_only:
        raise ConfigError("give --oversample or --center-only, not both")
    prep = dict(input_shapes=input_shapes, labels=labels, scale=scale, mean_file=mean_file,
                mean_value=mean_value, channel_order=channel_order, raw_scale=raw_scale)
    if weights:
        pred = _frozen_in_memory(model, weights, allow_python_layers=allow_python_layers,
                                 backend=backend, **prep)
    else:
        given = [f"--{k.replace('_', '-')}" for k, v in prep.items() if v]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to a Caffe definition with --weights; "
                              f"a frozen model keeps the preprocessing it was frozen with")
        try:
            pred = load(model, backend=backend, allow_python_layers=allow_python_layers)
        except ConfigError:
            raise
        except Exception as e:
            from netdef.errors import FileFormatError
            text = (".prototxt", ".pbtxt", ".txt", ".yaml", ".yml")
            if isinstance(e, FileFormatError) and model.lower().endswith(text):
                raise FileFormatError(f"{e.message}; a Caffe definition needs its weights: "
                                      f"netdef predict {model} --weights W.caffemodel ...",
                                      file=model) from None
            raise
    name = output_name or pred.outputs[0]
    if name not in pred.outputs:
        raise ConfigError(f"no output '{name}' (outputs: {', '.join(pred.outputs)})")
    crops = "oversample" if oversample else "center"
    for path in inputs:
        batch = _load_input(path, pred, images_dim=images_dim, crops=crops)
        out = pred.predict(batch)[name]
        if oversample and not path.lower().endswith(".npy"):
            out = out.reshape(1, 10, -1).mean(axis=1)
        rows = out.reshape(out.shape[0], -1) if out.ndim else out.reshape(1, 1)
        for k, vec in enumerate(rows):
            label = path if len(rows) == 1 else f"{path}[{k}]"
            top = pred.top_k(vec, top_k)
            if as_json:
                click.echo(json.dumps({"input": label, "top_k": top,
                                       "output": [float(v) for v in np.asarray(vec)]}))
            else:
                best = ", ".join(f"{t.get('label', t['index'])} {t['score']:.4f}" for t in top)
                click.echo(f"{label}: {best}")


@cli.group()
def export():
    """Write a frozen model in another tool's format (caffe, onnx)."""


@export.command("caffe")
@click.argument("frozen", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "outs", nargs=2, required=True,
              type=click.Path(dir_okay=False), metavar="DEPLOY.prototxt MODEL.caffemodel")
@user_errors
def export_caffe(frozen, outs):
    """A deploy prototxt and a .caffemodel that BVLC Caffe reads."""
    from netdef.deploy.export_caffe import export_caffe as do_export
    from netdef.deploy.frozen import read_frozen

    info = do_export(read_frozen(frozen), outs[0], outs[1])
    click.echo(f"wrote {outs[0]} and {outs[1]} ({info['layers']} layers)")


@export.command("onnx")
@click.argument("frozen", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option("--opset", type=int, default=13, show_default=True)
@user_errors
def export_onnx(frozen, out, opset):
    """An ONNX model (needs the onnx package), checked with onnx.checker."""
    from netdef.deploy.export_onnx import export_onnx as do_export
    from netdef.deploy.frozen import read_frozen

    info = do_export(read_frozen(frozen), out, opset=opset)
    click.echo(f"wrote {out} ({info['nodes']} nodes, opset {opset})")
