"""A Net in device mode: every blob gets a device mirror, each layer runs its CUDA impl from
:data:`netdef.backend.cuda.dispatch.TABLE` when there is one (else its CPU code on host copies,
synchronised lazily), loss tops are seeded on the device.  Per training step only the input
batch goes host->device: under a solver the loss is added into a device window
(:class:`netdef.backend.cuda.solver.LossWindow`, read at display iterations), elsewhere
``forward`` returns it as a float (one read).  The input batch goes up on a copy stream of
its own, from pinned buffers, as soon as the data layer produced it (:mod:`.staging`; off with
``NETDEF_CUDA_SYNC_INPUT=1``: then on first device read).

``Net.on_layer_backward`` (the MPI gradient sync of :mod:`netdef.parallel.mpi`) fires after
every layer's backward here too, in the same order as on the CPU.  MPI with a GPU goes through
the host: the hook reads ``blob.diff``, which copies that parameter's finished gradient to the
host (head CPU), and the averaged gradient the MPI code writes into that host array is copied
back to the device when the solver's update next reads it (one device->host and one
host->device copy per parameter and iteration; no CUDA-aware MPI)."""
from __future__ import annotations

from ...errors import NetdefError
from .device import select_device
from .dispatch import impl_for
from .launch import at, cpu_fallback, host_sync
from .primitives import loss_acc
from .memory import DeviceBlob, to_device
from .staging import InputStaging


def relu_fusions(net, impls) -> dict:
    """{i: negative slope} for each InnerProduct or (GEMM-path) Convolution ``i`` followed by
    an in-place ReLU on its only top: the ReLU runs in the GEMM's epilogue and layer ``i + 1``'s
    forward is skipped.  The blob holds the same values after the forward either way (the
    ReLU overwrites it in place), so this applies to whole forwards without hooks only; a
    partial forward or a hook sees every layer run (``NETDEF_CUDA_FUSE=0`` turns it off)."""
    import os
    if os.environ.get("NETDEF_CUDA_FUSE", "1") in ("0", ""):
        return {}
    out = {}
    for i in range(len(net.layers) - 1):
        layer, nxt = net.layers[i], net.layers[i + 1]
        gemm_layer = layer.type == "InnerProduct" or \
            (layer.type == "Convolution" and layer._path() in ("gemm", "pointwise"))
        if not gemm_layer or impls[i] is None or impls[i + 1] is None or nxt.type != "ReLU":
            continue
        tops, nb, nt = net.tops[i], net.bottoms[i + 1], net.tops[i + 1]
        if len(tops) != 1 or len(nb) != 1 or len(nt) != 1 or nb[0] is not tops[0] or \
                nt[0] is not tops[0] or any(net.loss_weights[i + 1]):
            continue
        out[i] = float(nxt.param.relu_param.negative_slope)
    return out


def check_memory(net, blobs, device_id) -> None:
    """Before any allocation: the blobs' device mirrors (data, and diff where the net runs a
    backward) fit in the device's free memory, else one-line DeviceMemoryError."""
    from .device import DeviceMemoryError, free_memory
    free = free_memory()
    if free is None:
        return
    grads = any(net.layer_need_backward)
    need = sum(b.count * b.dtype.itemsize * (2 if grads else 1) for b in blobs)
    if need > free:
        raise DeviceMemoryError(f"GPU {device_id}: the net's blobs need about "
                                f"{need / 2**20:.1f} MiB of device memory, {free / 2**20:.1f} "
                                f"MiB are free; use a smaller batch")


def net_blobs(net):
    seen = {}
    for b in net.blobs.values():
        seen[id(b)] = b
    for ts in net.tops:
        for b in ts:
            seen[id(b)] = b
    for bs in net.bottoms:
        for b in bs:
            seen[id(b)] = b
    for layer in net.layers:
        for b in layer.blobs:
            seen[id(b)] = b
    return list(seen.values())


class DeviceNet:
    def __init__(self, net, device_id: int = 0):
        self.device_id = select_device(device_id)
        self.net = net
        blobs = net_blobs(net)
        check_memory(net, blobs, self.device_id)
        for b in blobs:
            to_device(b)
        self.impls = [impl_for(layer) for layer in net.layers]
        #: asynchronous input uploads (None when off or when no data layer feeds the device)
        self.staging = InputStaging.create(net, self.impls)
        #: layers whose ReLU successor runs in their GEMM's epilogue (see relu_fusions)
        self.fusions = relu_fusions(net, self.impls)
        #: [acc, slot, first] while the solver keeps the loss on the device (LossWindow)
        self.loss_acc = None
        #: the solver's parameters in one buffer (netdef.backend.cuda.solver.FlatParams), set
        #: by the device updater: gradients are then cleared with one fill
        self.flat_params = None

    def loss_on_device(self) -> bool:
        """Whether forward can add the loss into a device accumulator (:attr:`loss_acc`):
        every loss top comes from a layer with a CUDA kernel, and there is one."""
        net = self.net
        tops = [i for i, ws in enumerate(net.loss_weights) if any(ws)]
        return bool(tops) and all(self.impls[i] is not None for i in tops)

    def clear_param_diffs(self) -> None:
        at("net", "clear_param_diffs")
        f = self.flat_params
        if f is not None and f.intact():
            f.zero_diffs()
            return
        for p in self.net.params:
            p.blob.zero_diff()

    @property
    def cpu_layers(self) -> list[str]:
        """Names of the layers that run on the CPU (no CUDA impl for their configuration)."""
        return [n for n, i in zip(self.net.layer_names, self.impls) if i is None]

    def forward(self, start: int = 0, end: int | None = None) -> float:
        net = self.net
        end = len(net.layers) - 1 if end is None else end
        loss = 0.0
        seen = net._reshaped_at
        before, after = net.hooks["before_forward"], net.hooks["after_forward"]
        staging = self.staging
        whole = start == 0 and end == len(net.layers) - 1
        if staging is not None:
            staging.begin(whole)
        fusions = self.fusions if whole and not before and not after else {}
        relu = None
        fused_loss = False
        for i in range(start, end + 1):
            layer, bottoms, tops = net.layers[i], net.bottoms[i], net.tops[i]
            imp = self.impls[i]
            for fn in before:
                fn(i)
            at(net.layer_names[i], "forward")
            try:
                # as the CPU Net: a layer whose bottoms changed shape reshapes first (the
                # device mirrors of its tops follow, see DeviceBlob.reshape)
                shapes = [b.shape for b in bottoms]
                if shapes != seen[i]:
                    layer.reshape(bottoms, tops)
                    seen[i] = shapes
                if relu is not None:            # this ReLU ran in layer i - 1's epilogue
                    relu = None
                    continue
                relu = fusions.get(i)
                if relu is not None:
                    layer._cu_fused_relu = relu
                    try:
                        imp.forward(layer, bottoms, tops)
                    finally:
                        layer._cu_fused_relu = None
                elif imp is not None:
                    la = self.loss_acc
                    if la is not None and getattr(imp, "accumulates_loss", False) and \
                            len(tops) == 1 and net.loss_weights[i][0]:
                        imp.forward(layer, bottoms, tops,
                                    loss_acc=(la[0], la[1], net.loss_weights[i][0], la[2]))
                        la[2] = False
                        fused_loss = True
                    else:
                        imp.forward(layer, bottoms, tops)
                else:
                    if bottoms:
                        cpu_fallback()
                    layer.forward(bottoms, tops)
                    if staging is not None:
                        staging.after_forward(i)
            except NetdefError as e:
                raise net._layer_error(e, net.layer_refs[i], layer.param) from None
            for j, w in enumerate(net.loss_weights[i]):
                if not w or fused_loss:
                    continue
                t = tops[j]
                la = self.loss_acc
                if la is not None:              # kept on the device, read at display
                    loss_acc(t.gpu_data(), t.count, w, la[0], la[1], la[2])
                    la[2] = False
                else:
                    v = t.cpu_data() if isinstance(t, DeviceBlob) else t.data
                    loss += w * float(v.sum(dtype="float64"))
            fused_loss = False
            for fn in after:
                fn(i)
        if staging is not None:
            staging.end()
        return loss

    def reshape(self) -> None:
        net = self.net
        for i, (layer, bottoms, tops) in enumerate(zip(net.layers, net.bottoms, net.tops)):
            if bottoms:
                layer.reshape(bottoms, tops)
                net._reshaped_at[i] = [b.shape for b in bottoms]

    def seed_loss_diffs(self) -> None:
        net = self.net
        for i, weights in enumerate(net.loss_weights):
            for j, w in enumerate(weights):
                if w:
                    net.tops[i][j].fill_gpu_diff(w)     # skipped when still seeded

    def backward(self, start: int | None = None, end: int = 0, seed: bool = True) -> None:
        net = self.net
        start = len(net.layers) - 1 if start is None else start
        if seed:
            self.seed_loss_diffs()
        hook = net.on_layer_backward
        before, after = net.hooks["before_backward"], net.hooks["after_backward"]
        for i in range(start, end - 1, -1):
            for fn in before:
                fn(i)
            if net.layer_need_backward[i]:
                imp = self.impls[i]
                at(net.layer_names[i], "backward")
                if imp is not None:
                    imp.backward(net.layers[i], net.tops[i], net.bottom_need_backward[i],
                                 net.bottoms[i])
                else:
                    cpu_fallback()
                    net.layers[i].backward(net.tops[i], net.bottom_need_backward[i],
                                           net.bottoms[i])
            if hook is not None:
                hook(i)
            for fn in after:
                fn(i)

    def layer_forward(self, i: int) -> None:
        """Forward of layer ``i`` alone (``netdef time``); waits for the device."""
        net = self.net
        imp = self.impls[i]
        if imp is not None:
            imp.forward(net.layers[i], net.bottoms[i], net.tops[i])
        else:
            net.layers[i].forward(net.bottoms[i], net.tops[i])
        self.synchronize()

    def layer_backward(self, i: int) -> None:
        net = self.net
        imp = self.impls[i]
        args = (net.tops[i], net.bottom_need_backward[i], net.bottoms[i])
        if imp is not None:
            imp.backward(net.layers[i], *args)
        else:
            net.layers[i].backward(*args)
        self.synchronize()

    def synchronize(self) -> None:
        from .device import cuda
        host_sync()
        cuda().synchronize()
