"""`netdef plot`: training curves from netdef metrics files or Caffe/netdef logs.

Parsing is :mod:`netdef.logparse` (no plotting library); drawing needs matplotlib, the optional
``plot`` extra (``pip install 'netdef[plot]'``), and runs headless (Agg canvas, no screen).
"""
from __future__ import annotations

import math
import os

import click

from .app import cli, user_errors

INSTALL_HINT = "pip install 'netdef[plot]'"


def _labels(paths) -> list[str]:
    """File names; the whole path where two inputs share a name."""
    base = [os.path.basename(p) or p for p in paths]
    return [p if base.count(b) > 1 else b for p, b in zip(paths, base)]


def _flat(outputs: dict):
    """(name, value) pairs; a several-valued output gives name[0], name[1], ..."""
    for name, v in outputs.items():
        if isinstance(v, list):
            for i, x in enumerate(v):
                yield f"{name}[{i}]", x
        elif v is not None:
            yield name, v


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (NaNs are skipped)."""
    out, acc, n, buf = [], 0.0, 0, []
    for v in values:
        ok = v is not None and math.isfinite(v)
        buf.append(v if ok else None)
        if ok:
            acc, n = acc + v, n + 1
        if len(buf) > window:
            old = buf.pop(0)
            if old is not None:
                acc, n = acc - old, n - 1
        out.append(acc / n if n else float("nan"))
    return out


def _nan(v):
    return float("nan") if v is None else v


def draw(runs, out: str, smooth: int | None = None) -> list[str]:
    """Draw ``runs`` = [(label, train_rows, test_rows), ...] into the image file ``out``.
    Returns the panel titles.  Raises ConfigError where matplotlib is missing."""
    from netdef.errors import ConfigError

    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(f"netdef plot needs matplotlib: {INSTALL_HINT}") from None

    # panels: train loss, one per test output name, lr
    test_names: list[str] = []
    for _, _, test in runs:
        for row in test:
            for name, _ in _flat(row["outputs"]):
                if name not in test_names:
                    test_names.append(name)
    has_loss = any(r["loss"] is not None for _, train, _ in runs for r in train)
    has_lr = any(r["lr"] is not None for _, train, _ in runs for r in train)
    panels = (["train loss"] if has_loss else []) + [f"test {n}" for n in test_names] + \
        (["learning rate"] if has_lr else [])
    if not panels:
        raise ConfigError("nothing to draw: the inputs hold no loss, test output or lr values")

    ncols = 1 if len(panels) <= 2 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.4 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    ax_of = dict(zip(panels, axes))
    colors = [f"C{i % 10}" for i in range(len(runs))]
    several = len(runs) > 1

    for (label, train, test), color in zip(runs, colors):
        if has_loss:
            ax = ax_of["train loss"]
            pts = [(r["iter"], r["loss"]) for r in train if r["loss"] is not None]
            if pts:
                xs, ys = zip(*pts)
                w = smooth if smooth else max(1, len(ys) // 25)
                if w > 1 and len(ys) > w:
                    ax.plot(xs, ys, color=color, alpha=0.3, linewidth=0.8)
                    ax.plot(xs, _smooth(list(ys), w), color=color, linewidth=1.6,
                            label=f"{label} (mean of {w})" if several else f"mean of {w}")
                else:
                    ax.plot(xs, ys, color=color, linewidth=1.4,
                            label=label if several else None)
        nets = sorted({r["net"] for r in test})
        styles = ["-", "--", ":", "-."]
        for k in nets:
            rows = [r for r in test if r["net"] == k]
            for name in test_names:
                pts = [(r["iter"], _nan(dict(_flat(r["outputs"])).get(name))) for r in rows]
                pts = [(x, y) for x, y in pts if not math.isnan(y)]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                who = [label] if several else []
                if len(nets) > 1:
                    who.append(f"test net #{k}")
                ax_of[f"test {name}"].plot(xs, ys, color=color, linestyle=styles[k % 4],
                                           marker="o" if len(xs) < 30 else None, markersize=3,
                                           label=", ".join(who) or None)
        if has_lr:
            pts = [(r["iter"], r["lr"]) for r in train if r["lr"] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax_of["learning rate"].plot(xs, ys, color=color, linewidth=1.4,
                                            drawstyle="steps-post",
                                            label=label if several else None)

    if has_lr:
        lrs = [r["lr"] for _, train, _ in runs for r in train if r["lr"] is not None]
        if all(v > 0 and math.isfinite(v) for v in lrs):
            ax_of["learning rate"].set_yscale("log")
    for title, ax in ax_of.items():
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize="small")
    if not several:
        fig.suptitle(runs[0][0])
    try:
        fig.savefig(out, dpi=100)
    except ValueError as e:     # unknown image format
        raise ConfigError(f"-o {out}: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot write {out} ({e.strerror or e})") from None
    return panels


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="LOG_OR_METRICS...")
@click.option("-o", "--output", "out", default="curves.png", show_default=True,
              type=click.Path(dir_okay=False),
              help="image file (.png, .svg, .pdf: the format follows the extension)")
@click.option("--smooth", type=click.IntRange(min=1), default=None,
              help="window of the train loss moving average (default: points / 25)")
@click.option("--json", "as_json", is_flag=True,
              help="print the parsed series instead of drawing: one JSON object "
                   '{"file", "train", "test"} a line per input')
@user_errors
def plot(inputs, out, smooth, as_json):
    """Draw training curves (train loss, test outputs, learning rate) from netdef
    *_metrics.jsonl files or Caffe/netdef training logs; several inputs are overlaid."""
    from netdef.logparse import parse_file, series_json

    parsed = [(path, *parse_file(path)) for path in inputs]
    if as_json:
        for path, train, test in parsed:
            click.echo(series_json(path, train, test))
        return
    runs = [(label, train, test) for label, (_, train, test) in zip(_labels(inputs), parsed)]
    draw(runs, out, smooth)
    click.echo(f"wrote {out}", err=True)


@cli.command("parse-log")
@click.argument("log", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="where LOG.train and LOG.test go (default: beside the log)")
@click.option("--delimiter", default=",", show_default=True, help="the CSV delimiter")
@user_errors
def parse_log(log, out_dir, delimiter):
    """Caffe's tools/extra/parse_log.py: LOG.train and LOG.test CSVs (NumIters, Seconds,
    LearningRate, then the outputs) from a Caffe or netdef log or a netdef metrics file."""
    from netdef.errors import ConfigError
    from netdef.io.files import write_file
    from netdef.logparse import caffe_csv, parse_file

    if len(delimiter) != 1:
        raise ConfigError(f"--delimiter must be one character, not {delimiter!r}")
    train, test = parse_file(log, as_parse_log=True)
    out_dir = out_dir or os.path.dirname(os.path.abspath(log))
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, os.path.basename(log))
    for ext, text in zip((".train", ".test"), caffe_csv(train, test, delimiter)):
        write_file(base + ext, text)
    click.echo(f"wrote {base}.train ({len([r for r in train if r['outputs']])} rows) and "
               f"{base}.test ({len([r for r in test if r['outputs']])} rows)")
