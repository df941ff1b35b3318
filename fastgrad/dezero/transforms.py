"""Data transforms with DeZero 0.0.13's names: on ndarrays, and on PIL images.

The ndarray transforms need only NumPy. The image transforms (``Convert``,
``Resize``, ``CenterCrop``, ``ToArray``, ``ToPIL``, ``RandomHorizontalFlip``)
need Pillow; without it they raise :class:`PillowNotAvailableError` (an
``ImportError``) when constructed, and the module still imports.
"""
import numbers

import numpy as np

from fastgrad._array_utils import int_pair

try:
    from PIL import Image as _Image
except ImportError:  # Pillow is optional
    _Image = None

__all__ = [
    "Compose", "Convert", "Resize", "CenterCrop", "ToArray", "ToPIL",
    "RandomHorizontalFlip", "Normalize", "Flatten", "AsType", "ToFloat", "ToInt",
    "PillowNotAvailableError", "pil_available",
]

pil_available = _Image is not None

# Pillow's bilinear filter code; its enum member compares equal to it.
_BILINEAR = getattr(_Image, "BILINEAR", 2) if _Image is not None else 2


class PillowNotAvailableError(ImportError):
    """Raised by the image transforms when Pillow is not installed."""


def _require_pil(what):
    if _Image is None:
        raise PillowNotAvailableError(
            f"{what} works on PIL images and needs Pillow, which is not "
            "installed: pip install Pillow")
    return _Image


class Compose:
    """Apply several transforms in order.

    Parameters
    ----------
    transforms : list of callables, optional
        Applied first to last; an empty list returns the input unchanged.

    Examples
    --------
    >>> f = Compose([Flatten(), ToFloat()])
    >>> f(np.ones((2, 2), dtype=np.uint8)).dtype
    dtype('float32')
    """

    def __init__(self, transforms=None):
        self.transforms = [] if transforms is None else transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


# =============================================================================
# Transforms for PIL images
# =============================================================================
class Convert:
    """Convert a PIL image to another mode (``'RGB'``, ``'L'``, ...; ``'BGR'`` swaps channels).

    Parameters
    ----------
    mode : str, default 'RGB'
    """

    def __init__(self, mode='RGB'):
        _require_pil("Convert")
        self.mode = mode

    def __call__(self, img):
        if self.mode == 'BGR':
            r, g, b = img.convert('RGB').split()
            return _Image.merge('RGB', (b, g, r))
        return img.convert(self.mode)


class Resize:
    """Resize a PIL image.

    Parameters
    ----------
    size : int or (int, int)
        Output ``(width, height)``; an int gives a square.
    mode : int, default bilinear
        Pillow resampling filter.
    """

    def __init__(self, size, mode=_BILINEAR):
        _require_pil("Resize")
        self.size = int_pair(size, "Resize: size (width, height)", wrong_type=ValueError)
        self.mode = mode

    def __call__(self, img):
        return img.resize(self.size, self.mode)


class CenterCrop:
    """Crop the centre of a PIL image to ``size``.

    Parameters
    ----------
    size : int or (int, int)
        Output ``(width, height)``; an int gives a square. When the margin
        is odd, the extra pixel is cut on the right (bottom).
    """

    def __init__(self, size):
        _require_pil("CenterCrop")
        self.size = int_pair(size, "CenterCrop: size (width, height)",
                             wrong_type=ValueError)

    def __call__(self, img):
        W, H = img.size
        OW, OH = self.size
        left = (W - OW) // 2
        up = (H - OH) // 2
        return img.crop((left, up, left + OW, up + OH))


class ToArray:
    """Convert a PIL image to a ``(C, H, W)`` ndarray of ``dtype``; ndarrays pass through.

    Parameters
    ----------
    dtype : dtype, default np.float32
    """

    def __init__(self, dtype=np.float32):
        _require_pil("ToArray")
        self.dtype = dtype

    def __call__(self, img):
        if isinstance(img, np.ndarray):
            return img
        if isinstance(img, _Image.Image):
            array = np.asarray(img)
            if array.ndim == 2:   # single-channel modes ('L', 'F', ...)
                array = array[np.newaxis]
            else:
                array = array.transpose(2, 0, 1)
            return array.astype(self.dtype)
        raise TypeError(f"ToArray takes a PIL image or an ndarray, got {type(img).__name__}")


class ToPIL:
    """Convert a ``(C, H, W)`` ndarray to a PIL image."""

    def __init__(self):
        _require_pil("ToPIL")

    def __call__(self, array):
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(f"ToPIL takes a (C, H, W) array, got shape {array.shape}")
        data = array.transpose(1, 2, 0)
        if data.shape[2] == 1:
            data = data[:, :, 0]
        return _Image.fromarray(data)


class RandomHorizontalFlip:
    """Flip a PIL image (or a ``(..., W)`` array) left to right with probability ``p``.

    Draws one number from ``np.random.rand`` per call.

    Parameters
    ----------
    p : float, default 0.5
    """

    def __init__(self, p=0.5):
        _require_pil("RandomHorizontalFlip")
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, img):
        if np.random.rand() >= self.p:
            return img
        if isinstance(img, np.ndarray):
            return img[..., ::-1]
        return img.transpose(getattr(_Image, "Transpose", _Image).FLIP_LEFT_RIGHT)


# =============================================================================
# Transforms for NumPy ndarrays
# =============================================================================
def _per_channel(value, array):
    # A sequence of per-channel values becomes an array of the input's dtype
    # shaped to broadcast over axis 0; a single value broadcasts everywhere.
    value = np.array(value, dtype=array.dtype)
    if value.ndim == 0:
        value = value.reshape(1)
    if value.ndim != 1:
        raise ValueError(f"Normalize takes a number or a sequence of per-channel "
                         f"values, got shape {value.shape}")
    shape = [1] * array.ndim
    if value.size != 1:
        if array.ndim == 0 or value.size != array.shape[0]:
            raise ValueError(f"Normalize got {value.size} per-channel values for an "
                             f"array of shape {array.shape}")
        shape[0] = value.size
    return value.reshape(shape)


class Normalize:
    """``(array - mean) / std``, with scalars or per-channel (axis 0) sequences.

    Parameters
    ----------
    mean : float or sequence, default 0
    std : float or sequence, default 1
    """

    def __init__(self, mean=0, std=1):
        self.mean = mean
        self.std = std

    def __call__(self, array):
        mean, std = self.mean, self.std
        if not np.isscalar(mean):
            mean = _per_channel(mean, array)
        if not np.isscalar(std):
            std = _per_channel(std, array)
        return (array - mean) / std


class Flatten:
    """Flatten an ndarray to 1-D (a copy)."""

    def __call__(self, array):
        return array.flatten()


class AsType:
    """Cast an ndarray to ``dtype``.

    Parameters
    ----------
    dtype : dtype, default np.float32
    """

    def __init__(self, dtype=np.float32):
        self.dtype = dtype

    def __call__(self, array):
        return array.astype(self.dtype)


ToFloat = AsType


class ToInt(AsType):
    """Cast an ndarray to an integer ``dtype`` (default: Python's ``int``, i.e. int64)."""

    def __init__(self, dtype=int):
        self.dtype = dtype
