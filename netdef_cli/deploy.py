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


@cli.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False),
              help="train/val or deploy definition (prototxt or YAML)")
@click.option("--weights", required=True, help="trained weights (.caffemodel[,more])")
@click.option("-o", "--output", "out", default="model.netdef", show_default=True,
              type=click.Path(dir_okay=False), help="the frozen model file")
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W", help="deploy shape of an input (default: the data "
              "layer's, batch 1)")
@click.option("--labels", type=click.Path(dir_okay=False), help="class names, one a line")
@click.option("--scale", callback=_scale, default=None,
              help="input scale (overrides transform_param.scale), e.g. 1/256")
@click.option("--mean-file", type=click.Path(dir_okay=False),
              help="mean .binaryproto (overrides transform_param)")
@click.option("--mean-value", callback=_floats, default=None,
              help="mean value(s), one or one per channel (overrides transform_param)")
@click.option("--channel-order", type=click.Choice(["RGB", "BGR", "GRAY"],
                                                   case_sensitive=False),
              help="channel order the net was trained on (default: BGR for 3 channels, as "
                   "Caffe's image tools write them)")
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


def _load_input(path: str, pred):
    """An input file as a float batch (preprocessed here when it is an image)."""
    import numpy as np

    from netdef.errors import ConfigError, FileFormatError

    low = path.lower()
    if low.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ConfigError("file not found", file=path) from None
        except (ValueError, OSError) as e:
            raise FileFormatError(f"not a .npy array: {e}", file=path) from None
        if arr.dtype == np.uint8:
            return pred.preprocess(arr if arr.ndim != 4 else list(arr))
        return arr.astype(np.float32)
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("reading images needs Pillow (pip install pillow)") from None
    from netdef.data.datum import open_image
    shape = pred.input_shape()
    c, h, w = shape[1:]
    try:
        with open_image(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            model = pred.model.deploy.input[0]
            th, tw = h, w
            if model.HasField("mean"):
                from netdef.io.weights import blob_shape
                ms = blob_shape(model.mean)
                th, tw = ms[-2], ms[-1]
            if (im.height, im.width) != (th, tw):
                im = im.resize((tw, th), Image.BILINEAR)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except OSError as e:
        raise FileFormatError(f"not an image Pillow can read ({e})", file=path) from None
    return pred.preprocess(arr)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top-k", "top_k", type=int, default=5, show_default=True)
@click.option("--output", "output_name", default=None, help="which output to rank "
              "(default: the first)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per input")
@click.option("--backend", type=click.Choice(["auto", "numba", "numpy"]), default="auto",
              show_default=True)
@click.option("--allow-python-layers", is_flag=True,
              help="load Python layers (only for files you trust)")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="refuse larger images before decoding them (default 89,478,485, Pillow's)")
@user_errors
def predict(model, inputs, top_k, output_name, as_json, backend, allow_python_layers,
            max_pixels):
    """Classify images (PNG/JPEG) or .npy arrays with a frozen model."""
    import numpy as np

    from netdef.deploy import load
    from netdef.errors import ConfigError

    if max_pixels is not None:
        from netdef.data.datum import set_max_pixels
        set_max_pixels(max_pixels)

    pred = load(model, backend=backend, allow_python_layers=allow_python_layers)
    name = output_name or pred.outputs[0]
    if name not in pred.outputs:
        raise ConfigError(f"no output '{name}' (outputs: {', '.join(pred.outputs)})")
    for path in inputs:
        batch = _load_input(path, pred)
        out = pred.predict(batch)[name]
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
