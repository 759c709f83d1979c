"""``caffe.Detector``: window classification as in R-CNN (pycaffe's ``Detector``).

``detect_windows([(image_file, windows)])`` crops each window (ymin, xmin, ymax, xmax; the
pixels ``im[ymin:ymax, xmin:xmax]``), preprocesses it like the Classifier and returns one dict
per window: ``window``, ``prediction`` (the net's first output), ``filename``.

Context padding (``context_pad`` p for an S x S input): the window is enlarged about its
centre by S / (S - 2p), so that the original window fills the central (S - 2p) x (S - 2p) of
the crop, and the enlarged box is warped onto S x S by bilinear sampling (pixel centres);
where it leaves the image the crop holds the mean pixel (the transform's mean, in image
space), so those pixels become zero after mean subtraction.
"""
from __future__ import annotations

import numpy as np

from ..deploy import preprocess as P
from .classifier import configure_transformer
from .net import TEST, Net


class Detector(Net):
    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        super().__init__(model_file, pretrained_file, TEST)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.configure_crop(context_pad)

    def configure_crop(self, context_pad) -> None:
        """Set the context padding (pixels of the net's input) and the mean pixel that fills
        the crop where the enlarged window leaves the image."""
        name = self.inputs[0]
        self.context_pad = int(context_pad or 0)
        shape = self.blobs[name].shape
        self.crop_dims = np.array(shape[2:])
        # a net-space zero is the mean: deprocessed, the mean in image space
        self.crop_mean = self.transformer.deprocess(name, np.zeros(shape[1:], np.float32))

    def crop(self, im: np.ndarray, window) -> np.ndarray:
        y0, x0, y1, x1 = (int(v) for v in window)
        if not self.context_pad:
            return im[y0:y1, x0:x1]
        sh, sw = (int(d) for d in self.crop_dims)
        p = self.context_pad
        grow_h, grow_w = sh / (sh - 2.0 * p), sw / (sw - 2.0 * p)
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
        hh, hw = (y1 - y0) / 2.0 * grow_h, (x1 - x0) / 2.0 * grow_w
        # the sample points of the S x S crop in image coordinates (pixel centres at k + 0.5)
        ys = cy - hh + (np.arange(sh) + 0.5) * (2 * hh / sh) - 0.5
        xs = cx - hw + (np.arange(sw) + 0.5) * (2 * hw / sw) - 0.5
        ih, iw = im.shape[:2]
        inside = ((ys >= -0.5) & (ys <= ih - 0.5))[:, None] & \
            ((xs >= -0.5) & (xs <= iw - 0.5))[None, :]
        yc, xc = np.clip(ys, 0, ih - 1), np.clip(xs, 0, iw - 1)
        ya, xa = np.floor(yc).astype(int), np.floor(xc).astype(int)
        yb, xb = np.minimum(ya + 1, ih - 1), np.minimum(xa + 1, iw - 1)
        fy, fx = (yc - ya)[:, None, None], (xc - xa)[None, :, None]
        im = np.asarray(im, np.float64)
        top = im[ya][:, xa] * (1 - fx) + im[ya][:, xb] * fx
        bot = im[yb][:, xa] * (1 - fx) + im[yb][:, xb] * fx
        warped = top * (1 - fy) + bot * fy
        fill = np.asarray(self.crop_mean, np.float64)
        if fill.shape[:2] != (sh, sw):
            fill = np.broadcast_to(fill.reshape(-1)[:im.shape[2]] if fill.ndim == 1 else
                                   fill.mean(axis=(0, 1)), warped.shape)
        return np.where(inside[:, :, None], warped, fill).astype(np.float32)

    def detect_windows(self, images_windows) -> list[dict]:
        name = self.inputs[0]
        color = self.blobs[name].shape[1] != 1       # a grey net reads grey images
        crops, where = [], []
        for filename, windows in images_windows:
            im = P.load_image(filename, color=color)
            for w in windows:
                crops.append(self.transformer.preprocess(name, self.crop(im, w)))
                where.append((filename, np.asarray(w)))
        if not crops:
            return []
        out = self.forward_all(**{name: np.stack(crops)})[self.outputs[0]]
        return [{"window": w, "prediction": out[i].reshape(-1), "filename": f}
                for i, (f, w) in enumerate(where)]
