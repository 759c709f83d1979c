"""`netdef draw`: Caffe's draw_net.py (netdef.draw)."""
from __future__ import annotations

import click

from .app import cli, user_errors


@cli.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="net.svg, .png, .pdf (through graphviz's dot) or .dot (the DOT text)")
@click.option("--rankdir", type=click.Choice(["LR", "TB", "BT", "RL"]), default="LR",
              show_default=True, help="direction of the graph's layout")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST", "ALL"], case_sensitive=False),
              default="ALL", show_default=True, help="which layers: those of a phase, or all")
@click.option("--display-lrm", is_flag=True, help="show each layer's lr_mult and decay_mult")
@user_errors
def draw(net, out, rankdir, phase, display_lrm):
    """Draw a net: layers as boxes coloured by type, blobs as octagons."""
    from netdef.config import load_net
    from netdef.draw import draw_net_to_file
    d = load_net(net)
    n = draw_net_to_file(d.message, out, rankdir=rankdir, phase=phase,
                         display_lrm=display_lrm)
    click.echo(f"wrote {out} ({n:,} bytes)")
