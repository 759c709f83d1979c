"""Graph passes on a NetParameter before layers are built (Caffe's Net::Init front half):

* :func:`filter_layers` — NetState include/exclude rules (phase, level, stages);
* :func:`order_layers` — file order where it is valid, otherwise a stable topological order;
  missing bottoms, duplicate tops and cycles are errors;
* :func:`insert_splits` — a Split layer for every top consumed more than once (Caffe's names).

Each pass works on a list of :class:`LayerRef` (a LayerParameter plus the index of the layer
in the definition), so later errors still point at the text that wrote the layer.
"""
from __future__ import annotations

import difflib
import heapq
from dataclasses import dataclass

from .errors import ConfigError
from .proto import pb


@dataclass
class LayerRef:
    param: object          # pb.LayerParameter
    index: int | None      # index in the definition's `layer` list (None: inserted)
    #: for inserted Split layers: (definition index of the producer, top index)
    origin: tuple[int, int] | None = None


class Locator:
    """Maps definition paths to ``file:line:col`` for errors."""

    def __init__(self, definition=None):
        self.definition = definition
        self.file = getattr(definition, "file", None)

    def where(self, path) -> tuple[int | None, int | None]:
        if self.definition is None or path is None:
            return (None, None)
        return self.definition.where(path)

    def error(self, message, path=None, *, layer=None, layer_type=None, cls=ConfigError):
        line, col = self.where(path)
        return cls(message, file=self.file, line=line, col=col, layer=layer,
                   layer_type=layer_type)

    def layer_path(self, ref: LayerRef, *rest):
        if ref.index is not None:
            return ("layer", ref.index) + tuple(rest)
        if ref.origin is not None:
            return ("layer", ref.origin[0], "top", ref.origin[1])
        return None


# -- state rules --------------------------------------------------------------------------------
def state_meets_rule(state, rule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_layers(net, state, loc: Locator) -> list[LayerRef]:
    out = []
    for i, lp in enumerate(net.layer):
        if len(lp.include) and len(lp.exclude):
            raise loc.error("give either include rules or exclude rules, not both",
                            ("layer", i, "exclude"), layer=lp.name, layer_type=lp.type)
        if len(lp.include):
            keep = any(state_meets_rule(state, r) for r in lp.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in lp.exclude)
        if keep:
            out.append(LayerRef(lp, i))
    if not out:
        what = ("defines no layers" if not len(net.layer) else
                f"has no layer in this state ({_describe_state(state)})")
        raise loc.error(f"the net {what}")
    return out


def _describe_state(state) -> str:
    parts = [f"phase {pb.Phase.Name(state.phase)}"]
    if state.level:
        parts.append(f"level {state.level}")
    if len(state.stage):
        parts.append("stages " + ",".join(state.stage))
    return ", ".join(parts)


# -- ordering --------------------------------------------------------------------------------
def _check_tops(refs: list[LayerRef], loc: Locator) -> None:
    """Duplicate tops: a name may be produced twice only in place (top j == bottom j)."""
    producer: dict[str, str] = {}
    for r in refs:
        lp = r.param
        seen_here = set()
        for j, t in enumerate(lp.top):
            if t in seen_here:
                raise loc.error(f"top '{t}' is listed twice", loc.layer_path(r, "top", j),
                                layer=lp.name, layer_type=lp.type)
            seen_here.add(t)
            in_place = j < len(lp.bottom) and lp.bottom[j] == t
            if t in producer and not in_place:
                raise loc.error(f"top '{t}' is already produced by layer '{producer[t]}'; a "
                                f"blob can be written again only in place (as the same-index "
                                f"bottom); rename this top", loc.layer_path(r, "top", j),
                                layer=lp.name, layer_type=lp.type)
            producer.setdefault(t, lp.name)


def order_layers(refs: list[LayerRef], loc: Locator) -> list[LayerRef]:
    """Return the layers in an order where every bottom is produced before it is read.

    The file order is kept when it is already valid (Caffe's rule); a bottom produced only by
    a later layer moves that producer forward (stable topological sort); cycles are errors."""
    _check_tops(refs, loc)
    n = len(refs)
    # versions of each blob name: producers in file order
    producers: dict[str, list[int]] = {}
    for i, r in enumerate(refs):
        for t in r.param.top:
            producers.setdefault(t, []).append(i)
    deps: list[set[int]] = [set() for _ in range(n)]
    src_of: dict[tuple[int, str], int] = {}
    valid_in_order = True
    for i, r in enumerate(refs):
        lp = r.param
        for j, b in enumerate(lp.bottom):
            prods = producers.get(b)
            if not prods:
                known = sorted(producers)
                close = difflib.get_close_matches(b, known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise loc.error(f"bottom '{b}' is not produced by any layer{hint}",
                                loc.layer_path(r, "bottom", j), layer=lp.name,
                                layer_type=lp.type)
            earlier = [p for p in prods if p < i]
            if earlier:
                src = earlier[-1]
            else:
                later = [p for p in prods if p != i]
                if not later:
                    raise loc.error(f"bottom '{b}' is produced only by this layer itself",
                                    loc.layer_path(r, "bottom", j), layer=lp.name,
                                    layer_type=lp.type)
                src = later[0]
                valid_in_order = False
            deps[i].add(src)
            src_of[(i, b)] = src
    if valid_in_order:
        return refs
    # a layer that rewrites a blob in place runs after every other reader of the same version
    readers: dict[tuple[int, str], list[int]] = {}
    for (i, b), s in src_of.items():
        readers.setdefault((s, b), []).append(i)
    for i, r in enumerate(refs):
        lp = r.param
        for j, t in enumerate(lp.top):
            if j < len(lp.bottom) and lp.bottom[j] == t:
                for other in readers.get((src_of[(i, t)], t), []):
                    if other != i:
                        deps[i].add(other)
    indeg = [len(d) for d in deps]
    users: list[list[int]] = [[] for _ in range(n)]
    for i, d in enumerate(deps):
        for s in d:
            users[s].append(i)
    heap = [i for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, u)
    if len(order) < n:
        stuck = [i for i in range(n) if indeg[i] > 0]
        cycle = _find_cycle(stuck, deps)
        names = " -> ".join(f"'{refs[i].param.name}'" for i in cycle)
        r = refs[cycle[0]]
        raise loc.error(f"the layers form a cycle: {names}; a net must be acyclic",
                        loc.layer_path(r), layer=r.param.name, layer_type=r.param.type)
    return [refs[i] for i in order]


def _find_cycle(stuck: list[int], deps: list[set[int]]) -> list[int]:
    stuck_set = set(stuck)
    start = stuck[0]
    path, seen = [start], {start: 0}
    cur = start
    while True:
        nxt = next(d for d in sorted(deps[cur]) if d in stuck_set)
        if nxt in seen:
            cyc = path[seen[nxt]:]
            return list(reversed(cyc)) + [cyc[-1]] if len(cyc) > 1 else cyc + cyc
        seen[nxt] = len(path)
        path.append(nxt)
        cur = nxt


# -- splits ----------------------------------------------------------------------------------
def split_layer_name(layer: str, blob: str, top_idx: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split"


def split_blob_name(layer: str, blob: str, top_idx: int, k: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split_{k}"


def insert_splits(refs: list[LayerRef]) -> list[LayerRef]:
    """Caffe's InsertSplits on an ordered layer list."""
    last_top: dict[str, tuple[int, int]] = {}
    source: dict[tuple[int, int], tuple[int, int]] = {}
    count: dict[tuple[int, int], int] = {}
    loss_w: dict[tuple[int, int], float] = {}
    for i, r in enumerate(refs):
        lp = r.param
        for j, b in enumerate(lp.bottom):
            t = last_top[b]
            source[(i, j)] = t
            count[t] = count.get(t, 0) + 1
        for j, t in enumerate(lp.top):
            last_top[t] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            t = last_top[lp.top[j]]
            loss_w[t] = lp.loss_weight[j]
            if loss_w[t]:
                count[t] = count.get(t, 0) + 1
    if all(c <= 1 for c in count.values()):
        return refs
    out: list[LayerRef] = []
    split_idx: dict[tuple[int, int], int] = {}
    for i, r in enumerate(refs):
        lp = pb.LayerParameter()
        lp.CopyFrom(r.param)
        for j in range(len(lp.bottom)):
            t = source[(i, j)]
            if count.get(t, 0) > 1:
                pname = refs[t[0]].param.name
                k = split_idx.get(t, 0)
                split_idx[t] = k + 1
                lp.bottom[j] = split_blob_name(pname, lp.bottom[j], t[1], k)
        new_ref = LayerRef(lp, r.index, r.origin)
        out.append(new_ref)
        for j, top in enumerate(list(lp.top)):
            c = count.get((i, j), 0)
            if c > 1:
                w = loss_w.get((i, j), 0.0)
                sp = pb.LayerParameter(name=split_layer_name(lp.name, top, j), type="Split")
                sp.bottom.append(top)
                for k in range(c):
                    sp.top.append(split_blob_name(lp.name, top, j, k))
                    if w:
                        sp.loss_weight.append(w if k == 0 else 0.0)
                if w:
                    lp.ClearField("loss_weight")
                    split_idx[(i, j)] = split_idx.get((i, j), 0) + 1
                origin = (r.index, j) if r.index is not None else r.origin
                out.append(LayerRef(sp, None, origin))
    return out
