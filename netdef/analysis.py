"""Static analysis of a compiled net: per-layer shapes, parameters, FLOPs and memory.

Works on a Net built with ``init_params=False``: nothing is allocated, filled or compiled.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: layer types whose blobs are running statistics, not learned parameters
STAT_LAYERS = {"BatchNorm"}


@dataclass
class LayerStats:
    name: str
    type: str
    bottoms: list[str]
    tops: dict[str, list[int]]
    params: int                 # learnable parameters owned by this layer
    param_shapes: list[list[int]] = field(default_factory=list)
    stats: int = 0              # stored statistics (BatchNorm), not learned
    shared: int = 0             # parameter blobs borrowed from another layer
    flops: int = 0
    activation_bytes: int = 0   # top data written by this layer (in-place tops excluded)
    in_place: bool = False


@dataclass
class NetStats:
    name: str
    phase: str
    dtype: str
    layers: list[LayerStats]
    outputs: dict[str, list[int]]
    inputs: dict[str, list[int]]
    learnable_params: int
    stat_params: int
    flops: int
    activation_bytes: int
    param_bytes: int
    #: layers left out because their shapes need a Python layer's module: [name, type]
    unknown: list[list[str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def analyze(net) -> NetStats:
    itemsize = net.dtype.itemsize
    owners_seen: set[int] = set()
    layers = []
    total_params = total_stats = total_flops = total_act = 0
    for i, layer in enumerate(net.layers):
        params = stats = shared = 0
        shapes = []
        for j, blob in enumerate(layer.blobs):
            k = net.layer_param_owner[i][j]
            shapes.append(list(blob.shape))
            if k in owners_seen:
                shared += 1
                continue
            owners_seen.add(k)
            if layer.type in STAT_LAYERS:
                stats += blob.count
            else:
                params += blob.count
        flops = int(layer.flops(net.bottoms[i], net.tops[i]) or 0)
        act = sum(t.count * itemsize for t, ip in zip(net.tops[i], net.in_place[i]) if not ip)
        layers.append(LayerStats(
            name=net.layer_names[i], type=layer.type, bottoms=list(net.bottom_names[i]),
            tops={n: list(t.shape) for n, t in zip(net.top_names[i], net.tops[i])},
            params=params, param_shapes=shapes, stats=stats, shared=shared, flops=flops,
            activation_bytes=act, in_place=any(net.in_place[i])))
        total_params += params
        total_stats += stats
        total_flops += flops
        total_act += act
    return NetStats(
        name=net.name, phase="TRAIN" if net.phase == 0 else "TEST", dtype=str(net.dtype),
        layers=layers,
        outputs={n: list(net.blobs[n].shape) for n in net.output_names},
        inputs={n: list(net.blobs[n].shape) for n in net.input_names},
        learnable_params=total_params, stat_params=total_stats, flops=total_flops,
        activation_bytes=total_act, param_bytes=(total_params + total_stats) * itemsize,
        unknown=[list(u) for u in getattr(net, "unknown_layers", [])])


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}"


def human_bytes(n: int) -> str:
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n} B"


def format_table(s: NetStats) -> str:
    rows = [("layer", "type", "output shape", "params", "FLOPs", "memory")]
    for l in s.layers:
        tops = list(l.tops.items()) or [("", None)]
        for k, (tname, shape) in enumerate(tops):
            shape_s = "" if shape is None else "x".join(map(str, shape)) or "scalar"
            if len(tops) > 1:
                shape_s = f"{tname}: {shape_s}"
            if k == 0:
                p = f"{l.params:,}" if l.params else ("shared" if l.shared else "")
                if l.stats:
                    p = (p + " " if p else "") + f"(+{l.stats:,} stats)"
                rows.append((l.name, l.type + (" (in place)" if l.in_place else ""), shape_s, p,
                             human(l.flops) if l.flops else "",
                             human_bytes(l.activation_bytes) if l.activation_bytes else ""))
            else:
                rows.append(("", "", shape_s, "", "", ""))
    for name, typ in s.unknown:
        rows.append((name, typ, "?", "?", "?", "?"))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(r[c].ljust(widths[c]) if c < 3 else r[c].rjust(widths[c])
                               for c in range(6)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    outs = ", ".join(f"{k} {'x'.join(map(str, v)) or 'scalar'}" for k, v in s.outputs.items())
    lines.append("")
    lines.append(f"net '{s.name}' ({s.phase}, {s.dtype}): {len(s.layers)} layers")
    lines.append(f"learnable parameters: {s.learnable_params:,}"
                 + (f" (+{s.stat_params:,} stored statistics)" if s.stat_params else "")
                 + f" = {human_bytes(s.param_bytes)}")
    lines.append(f"forward FLOPs: {human(s.flops)} ({s.flops:,})")
    lines.append(f"activation memory (forward, data only): {human_bytes(s.activation_bytes)}")
    lines.append(f"outputs: {outs or 'none'}")
    if s.unknown:
        lines.append(f"unknown: {len(s.unknown)} layers, left out of the totals: their shapes "
                     f"need a Python layer's module, which summary does not import (give its "
                     f"tops with --input-shape TOP=N,C,H,W, or --allow-python-layers)")
    return "\n".join(lines)
