"""CPU <-> GPU parity: one forward/backward of the same net, same weights, same inputs, on the
CPU and on the device; the largest relative difference per blob (data and diff, parameters
included), measured as max|cpu - gpu| / max|cpu| (the blob's largest magnitude)."""
from __future__ import annotations

import numpy as np

LABEL_CONSUMERS = {"SoftmaxWithLoss": 1, "Accuracy": 1, "MultinomialLogisticLoss": 1,
                   "InfogainLoss": 1}


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    scale = float(np.max(np.abs(a)))
    d = float(np.max(np.abs(a - b)))
    if scale == 0.0:
        return d
    return d / scale


def _label_classes(net) -> dict[str, int]:
    src = {}            # a Split top -> the blob it copies
    for layer, bn, tn in zip(net.layers, net.bottom_names, net.top_names):
        if layer.type == "Split":
            for t in tn:
                src[t] = bn[0]
    out = {}
    for layer, bn, bs in zip(net.layers, net.bottom_names, net.bottoms):
        k = LABEL_CONSUMERS.get(layer.type)
        if k is not None and len(bn) > k:
            axis = getattr(layer, "axis", 1)
            name = bn[k]
            while name in src:
                name = src[name]
            out[name] = bs[0].shape[axis] if bs[0].num_axes > axis else 1
    return out


def fill_inputs(net, rng) -> dict[str, np.ndarray]:
    """Random values for the Input layers' tops (class indices for label tops)."""
    labels = _label_classes(net)
    values = {}
    for name in net.input_names:
        b = net.blobs[name]
        if name in labels:
            v = rng.integers(0, max(labels[name], 1), size=b.shape).astype(np.float64)
        else:
            v = rng.standard_normal(b.shape)
        values[name] = v
    return values


def copy_params(src, dst) -> None:
    for a, b in zip(src.layers, dst.layers):
        for pa, pb_ in zip(a.blobs, b.blobs):
            pb_.data = np.array(pa.data)


def run_parity(make_net, device_id: int = 0, seed: int = 0) -> list[tuple[str, float]]:
    """``make_net()`` builds a fresh Net (same definition and seed each call).  Returns
    [(label, relative difference)] for every blob's data and diff and every parameter."""
    cpu = make_net()
    gpu = make_net()
    copy_params(cpu, gpu)
    gpu.to_device(device_id)
    return compare(cpu, gpu, fill_inputs(cpu, np.random.default_rng(seed)))


def compare(cpu, gpu, values: dict) -> list[tuple[str, float]]:
    """Feed ``values`` to both nets (the second one on the device, same parameters), run one
    forward/backward on each; [(label, relative difference)] for every blob's data and diff
    and every parameter."""
    for name, v in values.items():
        cpu.blobs[name].data = v
        gpu.blobs[name].data = v
    for net in (cpu, gpu):
        net.clear_param_diffs()
        net.forward()
        net.backward()
    results = []
    for name, b in cpu.blobs.items():
        g = gpu.blobs[name]
        results.append((f"{name} data", rel_diff(b.data, g.cpu_data())))
        results.append((f"{name} diff", rel_diff(b.diff, g.cpu_diff())))
    for lname, la, lb in zip(cpu.layer_names, cpu.layers, gpu.layers):
        for j, (pa, pb_) in enumerate(zip(la.blobs, lb.blobs)):
            results.append((f"{lname}[{j}] param data", rel_diff(pa.data, pb_.cpu_data())))
            results.append((f"{lname}[{j}] param diff", rel_diff(pa.diff, pb_.cpu_diff())))
    return results
