"""Activation memory planning: blobs whose lifetimes do not overlap share one buffer.

A *value* is one storage (a blob, with the blobs that view it: in-place tops, Split, Flatten,
Reshape).  It lives from the step that first writes it to the step that last reads it
(inputs from the start, outputs to the end).  Values are placed greedily, largest first, at the
lowest offset of one arena where no value alive at the same time sits (TFLite's "greedy by
size"); the arena is what inference needs, the sum of the sizes what a net without planning
allocates.  Pure Python: used by ``netdef freeze`` for its report and by the predictor.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64


@dataclass
class Placement:
    offset: int
    nbytes: int
    first: int
    last: int


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(lifetimes: dict, sizes: dict) -> tuple[dict, int]:
    """``lifetimes``: key -> (first step, last step); ``sizes``: key -> bytes.
    Returns (key -> Placement, arena bytes)."""
    order = sorted(lifetimes, key=lambda k: (-sizes[k], lifetimes[k][0]))
    placed: list[Placement] = []
    out: dict = {}
    arena = 0
    for k in order:
        first, last = lifetimes[k]
        size = _align(max(int(sizes[k]), 1))
        busy = sorted((p.offset, p.offset + _align(p.nbytes)) for p in placed
                      if not (p.last < first or last < p.first))
        off = 0
        for a, b in busy:
            if off + size <= a:
                break
            off = max(off, b)
        p = Placement(off, int(sizes[k]), first, last)
        placed.append(p)
        out[k] = p
        arena = max(arena, off + size)
    return out, arena


def _root(blob):
    seen = 0
    while getattr(blob, "_data_src", None) is not None and seen < 1000:
        blob = blob._data_src
        seen += 1
    return blob


def net_lifetimes(net, skip: set[int] = frozenset(), outputs=(), io=None, span=None) \
        -> tuple[dict, dict, dict]:
    """Lifetimes of the storage roots of a built :class:`netdef.net.Net`'s activations.

    ``skip``: layer indices that do not run (fused activations, whose tops already view their
    producer's).  ``io``: layer index -> (bottoms, tops) replacing that layer's own (a fused
    step that reads its first layer's bottoms and writes its last layer's tops; the blobs in
    between are never materialised).  ``span``: layer index -> (lo, hi): the step runs
    concurrently with steps lo..hi (per-task pipelines), so everything it touches lives over
    the whole span.  Returns (id(root) -> (first, last), id(root) -> bytes, id(root) -> root)."""
    io = io or {}
    span = span or {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    roots: dict[int, object] = {}
    end = len(net.layers)
    params = {id(_root(b)) for lay in net.layers for b in lay.blobs}
    for i, lay in enumerate(net.layers):
        if i in skip:
            continue
        is_input = lay.type == "Input"
        bottoms, tops = io.get(i, (net.bottoms[i], net.tops[i]))
        lo, hi = span.get(i, (i, i))
        for t in tops:
            r = _root(t)
            if id(r) in params:
                continue
            roots[id(r)] = r
            first[id(r)] = min(first.get(id(r), lo), 0 if is_input else lo)
            last[id(r)] = max(last.get(id(r), hi), hi)
        for b in bottoms:
            r = _root(b)
            if id(r) in params or id(r) not in first:
                continue
            last[id(r)] = max(last[id(r)], hi)
    for name in list(outputs) + list(net.output_names):
        if name in net.blobs:
            r = _root(net.blobs[name])
            if id(r) in first:
                last[id(r)] = end
    sizes = {k: r.count * r.dtype.itemsize for k, r in roots.items()}
    return {k: (first[k], last[k]) for k in roots}, sizes, roots


def plan_net(net, skip: set[int] = frozenset(), outputs=(), io=None, span=None) -> dict:
    """Plan a built net; returns a dict with ``placements`` (id(root) -> Placement),
    ``roots``, ``arena_bytes`` and ``unplanned_bytes`` (every value in its own buffer).
    ``io``, ``span``: as for :func:`net_lifetimes`."""
    life, sizes, roots = net_lifetimes(net, skip, outputs, io, span)
    places, arena = plan(life, sizes)
    return {"placements": places, "roots": roots, "arena_bytes": arena,
            "unplanned_bytes": sum(sizes.values()), "values": len(roots)}


def apply_plan(planned: dict):
    """Give every planned root a view of one shared arena; returns the arena."""
    import numpy as np
    arena = np.empty(max(planned["arena_bytes"], ALIGN), dtype=np.uint8)
    for k, p in planned["placements"].items():
        r = planned["roots"][k]
        view = arena[p.offset:p.offset + r.count * r.dtype.itemsize].view(r.dtype)
        r.set_params_storage(view.reshape(r.shape))
    return arena


def fused_skip(net, fused) -> set[int]:
    """Indices of the fused activation layers of a built net (``fused``: (producer, activation,
    slope) triples); their tops become views of their inputs, so they need no buffer."""
    names = {r for _, r, _ in fused}
    skip = set()
    for i, n in enumerate(net.layer_names):
        if n in names:
            skip.add(i)
            b, t = net.bottoms[i][0], net.tops[i][0]
            if t is not b:
                t.share_data(b)
    return skip
