"""Memory preflight: what a net will need, compared with what this process may still take,
before anything is allocated -- a batch of 2e7 in a definition is one line naming the need,
what is available and the largest layer, not a 58 GiB allocation that the kernel kills.

Need: data and diff of every blob (data only for a forward-only net), the parameters x (2 + the
solver's history blobs), and the largest convolution column buffer. Available: the least of
MemAvailable, the cgroup's memory limit less its usage, and the address-space limit (ulimit -v)
less this process's size.
"""
from __future__ import annotations

import os
import resource

from .errors import NetdefError


class MemoryPreflightError(NetdefError):
    """The net needs more memory than this process can have."""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _status_kib(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def available_bytes() -> tuple[int | None, str]:
    """(bytes this process may still allocate, where the bound comes from); (None, "") when
    nothing bounds it that can be read."""
    bounds = []
    avail = _status_kib(_read("/proc/meminfo"), "MemAvailable")
    if avail is not None:
        bounds.append((avail, "MemAvailable"))
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read(limit_f), _read(usage_f)
        if limit and usage and limit.strip().isdigit() and usage.strip().isdigit():
            lim = int(limit)
            if lim < (1 << 60):
                bounds.append((max(0, lim - int(usage)), "the cgroup's memory limit"))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        size = _status_kib(_read("/proc/self/status"), "VmSize") or 0
        bounds.append((max(0, soft - size), "the address-space limit (ulimit -v)"))
    if not bounds:
        return None, ""
    return min(bounds)


def human_bytes(n: float) -> str:
    for div, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{int(n)} B"


def _workspace_bytes(net, stats) -> int:
    """The largest convolution column buffer (im2col of one image), from the FLOPs count: a
    convolution's multiply-adds are its column matrix times num_output/group, a
    deconvolution's are its column matrix times in_channels/group."""
    best = 0
    for layer, ls, bottoms, tops in zip(net.layers, stats.layers, net.bottoms, net.tops):
        if layer.type not in ("Convolution", "Deconvolution") or not tops or not bottoms:
            continue
        cp = layer.param.convolution_param
        n = tops[0].shape[0] if tops[0].shape else 1
        per = cp.num_output if layer.type == "Convolution" else \
            (bottoms[0].shape[1] if len(bottoms[0].shape) > 1 else 0)
        if not per or not n:
            continue
        bias = sum(t.count for t in tops) if cp.bias_term else 0
        macs = (ls.flops - bias) // 2
        best = max(best, macs * max(1, cp.group) // per // n)
    return best * net.dtype.itemsize


def need_bytes(net, *, backward: bool, history: int = 0) -> dict:
    """What ``net`` (built shape-only) needs: a dict of activations, params, workspace, total,
    and the largest layer by output size."""
    from .analysis import analyze
    stats = analyze(net)
    act = stats.activation_bytes * (2 if backward else 1)
    params = stats.param_bytes * ((2 + history) if backward else 1)
    work = _workspace_bytes(net, stats)
    largest = max(stats.layers, key=lambda l: l.activation_bytes, default=None)
    return dict(activations=act, params=params, workspace=work, total=act + params + work,
                largest=largest)


def check(needs: list[dict], what: str = "this net", file: str | None = None) -> None:
    """Raise MemoryPreflightError when the nets of ``needs`` together need more than is
    available. ``NETDEF_NO_MEMCHECK=1`` skips the check."""
    if os.environ.get("NETDEF_NO_MEMCHECK"):
        return
    total = sum(n["total"] for n in needs)
    avail, source = available_bytes()
    if avail is None or total <= avail:
        return
    act = sum(n["activations"] for n in needs)
    params = sum(n["params"] for n in needs)
    work = max(n["workspace"] for n in needs)
    largest = max((n["largest"] for n in needs if n["largest"] is not None),
                  key=lambda l: l.activation_bytes, default=None)
    big = (f"; the largest layer is '{largest.name}' ({largest.type}) with "
           f"{human_bytes(largest.activation_bytes)} of outputs" if largest else "")
    raise MemoryPreflightError(
        f"{what} needs about {human_bytes(total)} (blobs {human_bytes(act)}, parameters and "
        f"solver state {human_bytes(params)}, workspace {human_bytes(work)}) but "
        f"{human_bytes(avail)} is available ({source}){big}: lower the batch size",
        file=file)


def preflight_net(definition, phase, *, backward: bool, history: int = 0, **net_kwargs) -> dict:
    """Build ``definition`` shape-only (nothing allocated, no Python layer imported) and return
    its :func:`need_bytes`."""
    from .layers.python_layer import SKIP, python_layers_mode
    from .net import Net
    with python_layers_mode(SKIP):
        net = Net(definition, phase, init_params=False, **net_kwargs)
    return need_bytes(net, backward=backward, history=history)
