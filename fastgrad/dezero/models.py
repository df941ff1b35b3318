"""Models: DeZero 0.0.13's ``dezero.models`` on fastgrad's engine.

``Model`` is a :class:`~fastgrad.dezero.layers.Layer` that can draw its
graph; ``Sequential`` and ``MLP`` chain layers; ``VGG16`` and ``ResNet``
(50/101/152) are the classic image classifiers.  Their weights are random
unless ``pretrained=True``, which reads DeZero's weight files from the
cache directory ``~/.dezero`` (fastgrad does not download them: the error
says which file to put where).

DeZero 0.0.13's ResNet passes its convolutions' arguments in the wrong
order and calls a misspelt batch-norm function, so it cannot run; here the
architecture is the intended one (the Chainer ResNet that DeZero ports,
with DeZero's attribute names, hence its weight-file keys).  DeZero's
``SqueezeNet`` is an empty placeholder; here it says so.
"""
import numpy as np

import fastgrad.dezero.functions as F
from fastgrad.dezero import layers as L
from fastgrad.dezero import utils
from fastgrad.dezero.functions_conv import average_pooling, pooling
from fastgrad.dezero.layers import Layer
from fastgrad.functions import dropout

__all__ = ["Model", "Sequential", "MLP", "VGG16", "ResNet", "ResNet50",
           "ResNet101", "ResNet152", "SqueezeNet", "BuildingBlock",
           "BottleneckA", "BottleneckB"]


# =============================================================================
# Model / Sequential / MLP
# =============================================================================
class Model(Layer):
    """A Layer that can draw its computational graph."""

    def plot(self, *inputs, to_file="model.png"):
        """Run ``forward(*inputs)`` and draw the graph with Graphviz.

        Returns what :func:`fastgrad.dezero.utils.plot_dot_graph` returns.
        """
        y = self.forward(*inputs)
        return utils.plot_dot_graph(y, verbose=True, to_file=to_file)


class Sequential(Model):
    """Apply ``layers`` one after the other (stored as ``l0``, ``l1``, ...).

    Examples
    --------
    >>> model = Sequential(L.Linear(5), L.Linear(2))
    >>> model(np.ones((3, 4))).shape
    (3, 2)
    """

    def __init__(self, *layers):
        super().__init__()
        self.layers = []
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layer {i} is not callable "
                                f"({type(layer).__name__})")
            setattr(self, "l" + str(i), layer)
            self.layers.append(layer)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MLP(Model):
    """Multi-layer perceptron: Linear layers with ``activation`` between them.

    Parameters
    ----------
    fc_output_sizes : sequence of int
        Output size of each Linear layer (``l0``, ``l1``, ...); the last is
        the model's output size.
    activation : callable
        Applied after every layer but the last.

    Examples
    --------
    >>> model = MLP((10, 3))
    >>> model(np.ones((2, 4))).shape
    (2, 3)
    """

    def __init__(self, fc_output_sizes, activation=F.sigmoid):
        super().__init__()
        sizes = list(fc_output_sizes)
        if not sizes:
            raise ValueError("MLP: fc_output_sizes must name at least one layer size")
        self.activation = activation
        self.layers = []
        for i, out_size in enumerate(sizes):
            layer = L.Linear(out_size)
            setattr(self, "l" + str(i), layer)
            self.layers.append(layer)

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


# =============================================================================
# VGG
# =============================================================================
class VGG16(Model):
    """VGG-16 (13 convolutions, 3 fully connected layers, 1000 classes).

    Parameters
    ----------
    pretrained : bool
        Load ``vgg16.npz`` (DeZero's converted ImageNet weights) from
        ``~/.dezero``; FileNotFoundError says where to put it if missing.

    Input: ``(N, 3, 224, 224)`` images made by :meth:`preprocess`; any size
    divisible by 32 works with random weights (``fc6`` adapts on first use).
    """
    WEIGHTS_PATH = "https://github.com/koki0702/dezero-models/releases/download/v0.1/vgg16.npz"

    def __init__(self, pretrained=False):
        super().__init__()
        self.conv1_1 = L.Conv2d(64, kernel_size=3, stride=1, pad=1)
        self.conv1_2 = L.Conv2d(64, kernel_size=3, stride=1, pad=1)
        self.conv2_1 = L.Conv2d(128, kernel_size=3, stride=1, pad=1)
        self.conv2_2 = L.Conv2d(128, kernel_size=3, stride=1, pad=1)
        self.conv3_1 = L.Conv2d(256, kernel_size=3, stride=1, pad=1)
        self.conv3_2 = L.Conv2d(256, kernel_size=3, stride=1, pad=1)
        self.conv3_3 = L.Conv2d(256, kernel_size=3, stride=1, pad=1)
        self.conv4_1 = L.Conv2d(512, kernel_size=3, stride=1, pad=1)
        self.conv4_2 = L.Conv2d(512, kernel_size=3, stride=1, pad=1)
        self.conv4_3 = L.Conv2d(512, kernel_size=3, stride=1, pad=1)
        self.conv5_1 = L.Conv2d(512, kernel_size=3, stride=1, pad=1)
        self.conv5_2 = L.Conv2d(512, kernel_size=3, stride=1, pad=1)
        self.conv5_3 = L.Conv2d(512, kernel_size=3, stride=1, pad=1)
        self.fc6 = L.Linear(4096)
        self.fc7 = L.Linear(4096)
        self.fc8 = L.Linear(1000)

        if pretrained:
            weights_path = utils.get_file(VGG16.WEIGHTS_PATH)
            self.load_weights(weights_path)

    def forward(self, x):
        x = F.relu(self.conv1_1(x))
        x = F.relu(self.conv1_2(x))
        x = pooling(x, 2, 2)
        x = F.relu(self.conv2_1(x))
        x = F.relu(self.conv2_2(x))
        x = pooling(x, 2, 2)
        x = F.relu(self.conv3_1(x))
        x = F.relu(self.conv3_2(x))
        x = F.relu(self.conv3_3(x))
        x = pooling(x, 2, 2)
        x = F.relu(self.conv4_1(x))
        x = F.relu(self.conv4_2(x))
        x = F.relu(self.conv4_3(x))
        x = pooling(x, 2, 2)
        x = F.relu(self.conv5_1(x))
        x = F.relu(self.conv5_2(x))
        x = F.relu(self.conv5_3(x))
        x = pooling(x, 2, 2)
        x = F.reshape(x, (x.shape[0], -1))
        x = dropout(F.relu(self.fc6(x)))
        x = dropout(F.relu(self.fc7(x)))
        x = self.fc8(x)
        return x

    @staticmethod
    def preprocess(image, size=(224, 224), dtype=np.float32):
        """PIL image -> (3, H, W) BGR array with the ImageNet mean removed."""
        image = image.convert("RGB")
        if size:
            image = image.resize(size)
        image = np.asarray(image, dtype=dtype)
        image = image[:, :, ::-1]
        image -= np.array([103.939, 116.779, 123.68], dtype=dtype)
        image = image.transpose((2, 0, 1))
        return image


# =============================================================================
# ResNet
# =============================================================================
class ResNet(Model):
    """Residual network with bottleneck blocks (50, 101 or 152 layers).

    Parameters
    ----------
    n_layers : {50, 101, 152}
    pretrained : bool
        Load ``resnet{n_layers}.npz`` from ``~/.dezero``.

    Input: ``(N, 3, H, W)`` images (224x224 for ImageNet; smaller images
    work with random weights down to 32x32).
    """
    WEIGHTS_PATH = "https://github.com/koki0702/dezero-models/releases/download/v0.1/resnet{}.npz"

    def __init__(self, n_layers=152, pretrained=False):
        super().__init__()
        if n_layers == 50:
            block = [3, 4, 6, 3]
        elif n_layers == 101:
            block = [3, 4, 23, 3]
        elif n_layers == 152:
            block = [3, 8, 36, 3]
        else:
            raise ValueError("The n_layers argument should be either 50, 101,"
                             " or 152, but {} was given.".format(n_layers))

        self.conv1 = L.Conv2d(64, 7, 2, 3)
        self.bn1 = L.BatchNorm()
        self.res2 = BuildingBlock(block[0], 64, 64, 256, 1)
        self.res3 = BuildingBlock(block[1], 256, 128, 512, 2)
        self.res4 = BuildingBlock(block[2], 512, 256, 1024, 2)
        self.res5 = BuildingBlock(block[3], 1024, 512, 2048, 2)
        self.fc6 = L.Linear(1000)

        if pretrained:
            weights_path = utils.get_file(ResNet.WEIGHTS_PATH.format(n_layers))
            self.load_weights(weights_path)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = pooling(x, kernel_size=3, stride=2)
        x = self.res2(x)
        x = self.res3(x)
        x = self.res4(x)
        x = self.res5(x)
        x = _global_average_pooling_2d(x)
        x = self.fc6(x)
        return x


class ResNet152(ResNet):
    """ResNet with 152 layers."""

    def __init__(self, pretrained=False):
        super().__init__(152, pretrained)


class ResNet101(ResNet):
    """ResNet with 101 layers."""

    def __init__(self, pretrained=False):
        super().__init__(101, pretrained)


class ResNet50(ResNet):
    """ResNet with 50 layers."""

    def __init__(self, pretrained=False):
        super().__init__(50, pretrained)


def _global_average_pooling_2d(x):
    N, C, H, W = x.shape
    h = average_pooling(x, (H, W), stride=1)
    h = F.reshape(h, (N, C))
    return h


class BuildingBlock(Layer):
    """A stage of a ResNet: one BottleneckA (``a``) then BottleneckBs (``b1``, ...)."""

    def __init__(self, n_layers=None, in_channels=None, mid_channels=None,
                 out_channels=None, stride=None, downsample_fb=None):
        super().__init__()
        self.a = BottleneckA(in_channels, mid_channels, out_channels, stride,
                             downsample_fb)
        self._forward = ["a"]
        for i in range(n_layers - 1):
            name = "b{}".format(i + 1)
            bottleneck = BottleneckB(out_channels, mid_channels)
            setattr(self, name, bottleneck)
            self._forward.append(name)

    def forward(self, x):
        for name in self._forward:
            x = getattr(self, name)(x)
        return x


class BottleneckA(Layer):
    """Bottleneck that changes the channel count and may downsample.

    Parameters
    ----------
    in_channels, mid_channels, out_channels : int
    stride : int
    downsample_fb : bool
        True: the stride is on the 3x3 convolution (Facebook ResNet);
        False: on the first 1x1 convolution (the original MSRA ResNet).
    """

    def __init__(self, in_channels, mid_channels, out_channels,
                 stride=2, downsample_fb=False):
        super().__init__()
        stride_1x1, stride_3x3 = (1, stride) if downsample_fb else (stride, 1)
        # The input channel counts are known, but the weights are still
        # created on first use, so building a ResNet-152 costs no memory
        # until it runs (or loads weights).
        self.conv1 = L.Conv2d(mid_channels, 1, stride_1x1, 0, nobias=True)
        self.bn1 = L.BatchNorm()
        self.conv2 = L.Conv2d(mid_channels, 3, stride_3x3, 1, nobias=True)
        self.bn2 = L.BatchNorm()
        self.conv3 = L.Conv2d(out_channels, 1, 1, 0, nobias=True)
        self.bn3 = L.BatchNorm()
        self.conv4 = L.Conv2d(out_channels, 1, stride, 0, nobias=True)
        self.bn4 = L.BatchNorm()

    def forward(self, x):
        h1 = F.relu(self.bn1(self.conv1(x)))
        h1 = F.relu(self.bn2(self.conv2(h1)))
        h1 = self.bn3(self.conv3(h1))
        h2 = self.bn4(self.conv4(x))
        return F.relu(h1 + h2)


class BottleneckB(Layer):
    """Bottleneck that keeps the resolution and the channel count."""

    def __init__(self, in_channels, mid_channels):
        super().__init__()
        self.conv1 = L.Conv2d(mid_channels, 1, 1, 0, nobias=True)
        self.bn1 = L.BatchNorm()
        self.conv2 = L.Conv2d(mid_channels, 3, 1, 1, nobias=True)
        self.bn2 = L.BatchNorm()
        self.conv3 = L.Conv2d(in_channels, 1, 1, 0, nobias=True)
        self.bn3 = L.BatchNorm()

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + x)


# =============================================================================
# SqueezeNet
# =============================================================================
class SqueezeNet(Model):
    """Placeholder: DeZero 0.0.13 declares SqueezeNet but defines no layers."""

    def __init__(self, pretrained=False):
        raise NotImplementedError("SqueezeNet: DeZero 0.0.13 declares this model "
                                  "without an architecture, so there is nothing "
                                  "to build; use VGG16 or ResNet50/101/152")
