"""``caffe.Classifier``: a TEST-phase Net with a Transformer, classifying H x W x K images
(pycaffe's ``Classifier``).  The resize, crops and transform are netdef.deploy.preprocess's,
the same functions ``netdef predict --oversample`` uses."""
from __future__ import annotations

import numpy as np

from ..deploy import preprocess as P
from .net import TEST, Net


def configure_transformer(net: Net, mean=None, input_scale=None, raw_scale=None,
                          channel_swap=None) -> P.Transformer:
    """The Transformer of pycaffe's Classifier and Detector for ``net``'s first input: H x W x K
    images to K x H x W, then channel swap, raw scale, mean, input scale as given."""
    name = net.inputs[0]
    t = P.Transformer({name: net.blobs[name].shape})
    t.set_transpose(name, (2, 0, 1))
    if mean is not None:
        t.set_mean(name, mean)
    if input_scale is not None:
        t.set_input_scale(name, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(name, channel_swap)
    return t


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)``; ``predict(inputs, oversample=True)``: images resized
    to ``image_dims`` (default: the input blob's H x W), 10 crops each (4 corners, centre and
    their mirrors) or the centre crop, the class probabilities averaged over an image's crops:
    one row per image."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, pretrained_file, TEST)
        name = self.inputs[0]
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.crop_dims = np.array(self.blobs[name].shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        name = self.inputs[0]
        images = np.stack([P.resize_image(np.asarray(im, np.float32), tuple(self.image_dims))
                           for im in inputs])
        crops = P.oversample(images, tuple(self.crop_dims)) if oversample else \
            P.center_crop(images, tuple(self.crop_dims))
        batch = np.stack([self.transformer.preprocess(name, c) for c in crops])
        out = self.forward_all(**{name: batch})[self.outputs[0]]
        if oversample:
            out = out.reshape(len(out) // 10, 10, -1).mean(axis=1)
        return out.reshape(len(inputs), -1)
