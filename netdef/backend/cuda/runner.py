"""A Net in device mode: every blob gets a device mirror, each layer runs its CUDA impl from
:data:`netdef.backend.cuda.dispatch.TABLE` when there is one (else its CPU code on host copies,
synchronised lazily), loss tops are seeded on the device.  Per step only the input batch goes
host->device and the loss values device->host.  The input batch goes up on a copy stream of
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
from . import primitives as K
from .device import select_device
from .dispatch import impl_for
from .memory import DeviceBlob, to_device
from .staging import InputStaging


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
        for b in net_blobs(net):
            to_device(b)
        self.impls = [impl_for(layer) for layer in net.layers]
        #: asynchronous input uploads (None when off or when no data layer feeds the device)
        self.staging = InputStaging.create(net, self.impls)

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
        if staging is not None:
            staging.begin(start == 0 and end == len(net.layers) - 1)
        for i in range(start, end + 1):
            layer, bottoms, tops = net.layers[i], net.bottoms[i], net.tops[i]
            imp = self.impls[i]
            for fn in before:
                fn(i)
            try:
                # as the CPU Net: a layer whose bottoms changed shape reshapes first (the
                # device mirrors of its tops follow, see DeviceBlob.reshape)
                shapes = [b.shape for b in bottoms]
                if shapes != seen[i]:
                    layer.reshape(bottoms, tops)
                    seen[i] = shapes
                if imp is not None:
                    imp.forward(layer, bottoms, tops)
                else:
                    layer.forward(bottoms, tops)
                    if staging is not None:
                        staging.after_forward(i)
            except NetdefError as e:
                raise net._layer_error(e, net.layer_refs[i], layer.param) from None
            for j, w in enumerate(net.loss_weights[i]):
                if w:
                    t = tops[j]
                    v = t.cpu_data() if isinstance(t, DeviceBlob) else t.data
                    loss += w * float(v.sum(dtype="float64"))
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
                    t = net.tops[i][j]
                    K.fill(t.mutable_gpu_diff(), w, t.count)

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
                if imp is not None:
                    imp.backward(net.layers[i], net.tops[i], net.bottom_need_backward[i],
                                 net.bottoms[i])
                else:
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
        cuda().synchronize()
