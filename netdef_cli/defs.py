"""Commands on definitions: summary, convert, upgrade, layers."""
from __future__ import annotations

import json

import click

from .app import PHASE, cli, parse_input_shapes, python_layers_option, user_errors


@cli.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--phase", type=PHASE, default="TEST", show_default=True,
              help="which layers to include (NetState phase)")
@click.option("--level", type=int, default=None, help="NetState level")
@click.option("--stage", "stages", multiple=True, help="NetState stage (repeatable)")
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W", help="shape of a data/Input top (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="for memory figures")
@python_layers_option(runs_by_default=False)
@user_errors
def summary(net, phase, level, stages, input_shapes, as_json, dtype):
    """Shapes, learnable parameters, FLOPs and memory of NET, per layer, without running it
    (Python layers' modules are not imported unless --allow-python-layers)."""
    from netdef.analysis import analyze, format_table
    from netdef.config import load_net
    from netdef.net import PHASES, Net

    d = load_net(net)
    n = Net(d, PHASES[phase.upper()], level=level, stages=stages, dtype=dtype,
            input_shapes=input_shapes, init_params=False)
    stats = analyze(n)
    if as_json:
        click.echo(json.dumps(stats.to_json()))
    else:
        for note in d.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(format_table(stats))


def _detect_kind(path: str) -> str:
    """'net' or 'solver', from the top-level field names of a text definition."""
    from netdef.config.loader import _read_text, file_format
    from netdef.config.prototxt import parse_prototxt
    from netdef.config.yamlfmt import parse_yaml
    from netdef.proto import pb

    fmt = file_format(path)
    if fmt == "binary":
        return "net"
    text = _read_text(path)
    tree = parse_yaml(text, path) if fmt == "yaml" else parse_prototxt(text, path)
    keys = {e.key for e in tree.entries}
    net_f = set(pb.NetParameter.DESCRIPTOR.fields_by_name)
    sol_f = set(pb.SolverParameter.DESCRIPTOR.fields_by_name)
    return "solver" if len(keys & sol_f) > len(keys & net_f) else "net"


KIND = click.Choice(["auto", "net", "solver"])


def _write(message, out: str) -> None:
    from netdef.config import file_format, to_text
    from netdef.io.files import write_file

    fmt = file_format(out)
    if fmt == "binary":
        write_file(out, message.SerializeToString())
    else:
        write_file(out, to_text(message, fmt))


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--kind", type=KIND, default="auto", show_default=True,
              help="what the file holds (auto: from its fields)")
@user_errors
def convert(src, dst, kind):
    """Convert a net or solver definition between prototxt and YAML (by file extension)."""
    from netdef.config import load_message
    from netdef.proto import pb

    kind = _detect_kind(src) if kind == "auto" else kind
    msg = pb.SolverParameter() if kind == "solver" else pb.NetParameter()
    d = load_message(src, msg)
    _write(d.message, dst)


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--kind", type=KIND, default="auto", show_default=True)
@user_errors
def upgrade(src, dst, kind):
    """Upgrade a legacy (V0/V1) net or old solver to the current format."""
    from netdef.config import load_net, load_solver

    kind = _detect_kind(src) if kind == "auto" else kind
    d = load_solver(src) if kind == "solver" else load_net(src)
    for note in d.notes or ["already in the current format"]:
        click.echo(f"note: {note}", err=True)
    _write(d.message, dst)


@cli.command("layers")
@click.option("--json", "as_json", is_flag=True, help="print one JSON list")
def layers_cmd(as_json):
    """List every registered layer type, its parameter message and its kernels."""
    from netdef.layers.registry import get_layer_class, layer_types, param_field
    from netdef.proto import pb

    rows = []
    for t in layer_types():
        field = param_field(t)
        msg = None
        if field and field in pb.LayerParameter.DESCRIPTOR.fields_by_name:
            msg = pb.LayerParameter.DESCRIPTOR.fields_by_name[field].message_type.name
        cls = get_layer_class(t)
        rows.append({"type": t, "param_field": field, "param_message": msg,
                     "cpu": bool(getattr(cls, "has_cpu", True)),
                     "cuda": bool(getattr(cls, "has_cuda", False)),
                     "doc": (cls.__doc__ or "").strip().split("\n")[0]})
    if as_json:
        click.echo(json.dumps(rows))
        return
    w = max(len(r["type"]) for r in rows)
    for r in rows:
        kern = ",".join(k for k in ("cpu", "cuda") if r[k]) or "-"
        click.echo(f"{r['type']:<{w}}  {r['param_field'] or '-':<24} {kern:<9} {r['doc']}")
