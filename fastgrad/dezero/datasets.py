"""Datasets with DeZero 0.0.13's names: toy sets, MNIST, CIFAR, sequences.

Nothing here touches the network. A dataset that DeZero downloads is read
from the file DeZero's ``get_file`` caches it to (``~/.dezero/<file name>``),
or from the directory given as ``root=``; a missing file raises
``FileNotFoundError`` naming the URL to fetch it from and the path to put it.

The toy sets draw from NumPy's global random state exactly as DeZero does
(``get_spiral`` seeds it with 1984 for train and 2020 for test), so they give
the same arrays. matplotlib is imported only by the ``show()`` methods.
"""
import ast
import gzip
import io
import os
import pickle
import tarfile

import numpy as np

from fastgrad.dezero import utils
from fastgrad.dezero.transforms import Compose, Flatten, ToFloat, Normalize

__all__ = [
    "Dataset", "get_spiral", "Spiral", "MNIST", "CIFAR10", "CIFAR100", "ImageNet",
    "SinCurve", "Shakespear", "BigData", "load_cache_npz", "save_cache_npz",
]


# =============================================================================
# local files
# =============================================================================
def _file_name(url, file_name=None):
    return url[url.rfind('/') + 1:] if file_name is None else file_name


def _local_file(url, file_name=None, root=None):
    """Path of the local copy of ``url``: in ``root`` if given, else DeZero's cache."""
    if root is None:
        return utils.get_file(url, file_name)
    path = os.path.join(os.fspath(root), _file_name(url, file_name))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist and fastgrad does not download: fetch {url} "
            f"and save it as {path}")
    return path


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("show() draws with matplotlib, which is not installed: "
                          "pip install matplotlib") from exc
    return plt


# =============================================================================
# Dataset (base class)
# =============================================================================
class Dataset:
    """Base class: indexable ``(x, t)`` pairs, filled in by :meth:`prepare`.

    Parameters
    ----------
    train : bool, default True
        The training split (or the test split).
    transform, target_transform : callable, optional
        Applied to each example and each label on access.

    Subclasses set ``self.data`` (and ``self.label``, or leave it ``None``)
    in ``prepare()``.
    """

    def __init__(self, train=True, transform=None, target_transform=None):
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        if self.transform is None:
            self.transform = lambda x: x
        if self.target_transform is None:
            self.target_transform = lambda x: x

        self.data = None
        self.label = None
        self.prepare()

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)) and not np.isscalar(index):
            raise TypeError(f"a dataset is indexed by one integer, got {type(index).__name__}")
        if self.data is None:
            raise ValueError(f"{type(self).__name__} has no data: prepare() must set self.data")
        if self.label is None:
            return self.transform(self.data[index]), None
        return self.transform(self.data[index]), self.target_transform(self.label[index])

    def __len__(self):
        if self.data is None:
            raise ValueError(f"{type(self).__name__} has no data: prepare() must set self.data")
        return len(self.data)

    def prepare(self):
        """Load or build ``self.data`` and ``self.label`` (nothing in the base class)."""


# =============================================================================
# Toy datasets
# =============================================================================
def get_spiral(train=True):
    """Three interleaved spirals of 100 points each, shuffled.

    Seeds NumPy's global random state (1984 for ``train``, 2020 otherwise)
    and draws exactly what DeZero draws, so the arrays are DeZero's.

    Returns
    -------
    x : ndarray, float32, shape (300, 2)
    t : ndarray, int, shape (300,)
        Class of each point, 0, 1 or 2.
    """
    np.random.seed(seed=1984 if train else 2020)
    num_data, num_class, input_dim = 100, 3, 2
    x = np.zeros((num_data * num_class, input_dim), dtype=np.float32)
    t = np.zeros(num_data * num_class, dtype=int)
    # One normal draw per point, class by class, point by point: the order
    # DeZero draws them in.
    noise = np.random.randn(num_class, num_data)
    for j in range(num_class):
        for i in range(num_data):
            rate = i / num_data
            radius = 1.0 * rate
            theta = j * 4.0 + 4.0 * rate + noise[j, i] * 0.2
            ix = num_data * j + i
            x[ix, 0] = radius * np.sin(theta)
            x[ix, 1] = radius * np.cos(theta)
            t[ix] = j
    order = np.random.permutation(num_data * num_class)
    return x[order], t[order]


class Spiral(Dataset):
    """The :func:`get_spiral` points as a dataset."""

    def prepare(self):
        self.data, self.label = get_spiral(self.train)


# =============================================================================
# MNIST-like datasets: MNIST / CIFAR
# =============================================================================
def _read_idx(path, magic, ndim):
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], 'big') != magic:
        raise ValueError(f"{path} is not an MNIST idx file of {ndim}-d data "
                         f"(expected magic number {magic})")
    shape = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], 'big') for k in range(ndim))
    array = np.frombuffer(raw, np.uint8, offset=header)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {array.size} bytes of data, its header says {shape}")
    return array.reshape(shape)


class MNIST(Dataset):
    """MNIST digits: ``(1, 28, 28)`` uint8 images (flattened to 784 floats in [0, 1] by default).

    Reads ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``
    (``t10k-...`` for the test split) from ``~/.dezero`` or ``root``.

    Parameters
    ----------
    train : bool, default True
    transform : callable, default Compose([Flatten(), ToFloat(), Normalize(0., 255.)])
    target_transform : callable, optional
    root : path, optional
        Directory holding the four files under their original names.
    """
    url = 'http://yann.lecun.com/exdb/mnist/'

    def __init__(self, train=True,
                 transform=Compose([Flatten(), ToFloat(), Normalize(0., 255.)]),
                 target_transform=None, *, root=None):
        self.root = root
        super().__init__(train, transform, target_transform)

    def prepare(self):
        split = 'train' if self.train else 't10k'
        data_path = _local_file(self.url + f'{split}-images-idx3-ubyte.gz', root=self.root)
        label_path = _local_file(self.url + f'{split}-labels-idx1-ubyte.gz', root=self.root)
        self.data = self._load_data(data_path)
        self.label = self._load_label(label_path)
        if len(self.data) != len(self.label):
            raise ValueError(f"{data_path} has {len(self.data)} images but {label_path} "
                             f"has {len(self.label)} labels")

    def _load_label(self, filepath):
        return _read_idx(filepath, 2049, 1)

    def _load_data(self, filepath):
        images = _read_idx(filepath, 2051, 3)
        return images.reshape(-1, 1, images.shape[1], images.shape[2])

    def show(self, row=10, col=10):
        """Show a ``row`` x ``col`` grid of random images (needs matplotlib)."""
        plt = _pyplot()
        H, W = self.data.shape[2], self.data.shape[3]
        img = np.zeros((H * row, W * col))
        for r in range(row):
            for c in range(col):
                k = np.random.randint(0, len(self.data) - 1)
                img[r * H:(r + 1) * H, c * W:(c + 1) * W] = self.data[k].reshape(H, W)
        plt.imshow(img, cmap='gray', interpolation='nearest')
        plt.axis('off')
        plt.show()

    @staticmethod
    def labels():
        """Class index to name: ``{0: '0', ..., 9: '9'}``."""
        return {i: str(i) for i in range(10)}


class _ArrayUnpickler(pickle.Unpickler):
    # The CIFAR batches are pickled dicts of bytes, lists and NumPy arrays;
    # nothing else is let through, so a tampered download cannot run code.
    _allowed = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
        # Python 3 writes bytes at pickle protocol 2 as latin-1 text to encode.
        ('_codecs', 'encode'),
    }

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")


def _read_cifar_batches(path, names):
    """The unpickled dicts of the tar members whose base names are in ``names``, by name."""
    found = {}
    with tarfile.open(path, 'r:gz') as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if member.isfile() and base in names:
                raw = tar.extractfile(member).read()
                found[base] = _ArrayUnpickler(io.BytesIO(raw), encoding='bytes').load()
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}: not a CIFAR python archive")
    return found


class CIFAR10(Dataset):
    """CIFAR-10: ``(3, 32, 32)`` uint8 images of 10 classes (floats in [-1, 509] by default).

    Reads ``cifar-10-python.tar.gz`` from ``~/.dezero`` or ``root``, and,
    like DeZero, keeps the decoded arrays next to it in
    ``cifar-10-python.tar.gz.train.npz`` / ``.test.npz`` for the next load.
    Images stay uint8 in both splits (DeZero widens the train split to
    float64); the default transform gives the same floats either way.

    Parameters
    ----------
    train : bool, default True
    transform : callable, default Compose([ToFloat(), Normalize(mean=0.5, std=0.5)])
    target_transform : callable, optional
    root : path, optional
        Directory holding the archive (and its cache).
    """
    url = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'

    def __init__(self, train=True,
                 transform=Compose([ToFloat(), Normalize(mean=0.5, std=0.5)]),
                 target_transform=None, *, root=None):
        self.root = root
        super().__init__(train, transform, target_transform)

    def _cache_name(self):
        return self.url

    def prepare(self):
        cache = self.root if self.root is not None else utils.cache_dir
        self.data, self.label = load_cache_npz(self._cache_name(), self.train, root=cache)
        if self.data is not None:
            return
        path = _local_file(self.url, root=self.root)
        data, label = self._load(path)
        self.data = data.reshape(-1, 3, 32, 32)
        self.label = label
        save_cache_npz(self.data, self.label, self._cache_name(), self.train, root=cache)

    def _load(self, path):
        names = ([f'data_batch_{i}' for i in range(1, 6)] if self.train else ['test_batch'])
        batches = _read_cifar_batches(path, names)
        data = np.concatenate([np.asarray(batches[n][b'data'], dtype=np.uint8) for n in names])
        label = np.concatenate([np.array(batches[n][b'labels'], dtype=int) for n in names])
        return data, label

    def show(self, row=10, col=10):
        """Show a ``row`` x ``col`` grid of random images (needs matplotlib)."""
        plt = _pyplot()
        H, W = 32, 32
        img = np.zeros((H * row, W * col, 3))
        for r in range(row):
            for c in range(col):
                k = np.random.randint(0, len(self.data) - 1)
                img[r * H:(r + 1) * H, c * W:(c + 1) * W] = \
                    self.data[k].reshape(3, H, W).transpose(1, 2, 0) / 255
        plt.imshow(img, interpolation='nearest')
        plt.axis('off')
        plt.show()

    @staticmethod
    def labels():
        """Class index to name (DeZero's spelling, ``'ariplane'`` included)."""
        return {0: 'ariplane', 1: 'automobile', 2: 'bird', 3: 'cat', 4: 'deer',
                5: 'dog', 6: 'frog', 7: 'horse', 8: 'ship', 9: 'truck'}


_CIFAR100_COARSE = [
    'aquatic mammals', 'fish', 'flowers', 'food containers', 'fruit and vegetables',
    'household electrical device', 'household furniture', 'insects', 'large carnivores',
    'large man-made outdoor things', 'large natural outdoor scenes',
    'large omnivores and herbivores', 'medium-sized mammals', 'non-insect invertebrates',
    'people', 'reptiles', 'small mammals', 'trees', 'vehicles 1', 'vehicles 2']

_CIFAR100_FINE = [
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle',
    'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can',
    'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock', 'cloud',
    'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant',
    'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
    'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree',
    'motorcycle', 'mountain', 'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid',
    'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy',
    'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea',
    'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider',
    'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone',
    'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe',
    'whale', 'willow_tree', 'wolf', 'woman', 'worm']


class CIFAR100(CIFAR10):
    """CIFAR-100: ``(3, 32, 32)`` uint8 images with fine (100) or coarse (20) labels.

    Reads ``cifar-100-python.tar.gz`` from ``~/.dezero`` or ``root``; the
    decoded arrays are cached beside it as for :class:`CIFAR10` (a separate
    cache file for coarse labels, so the two label types never mix).

    Parameters
    ----------
    train : bool, default True
    transform : callable, default Compose([ToFloat(), Normalize(mean=0.5, std=0.5)])
    target_transform : callable, optional
    label_type : {'fine', 'coarse'}, default 'fine'
    root : path, optional
    """
    url = 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'

    def __init__(self, train=True,
                 transform=Compose([ToFloat(), Normalize(mean=0.5, std=0.5)]),
                 target_transform=None, label_type='fine', *, root=None):
        if label_type not in ('fine', 'coarse'):
            raise ValueError(f"label_type must be 'fine' or 'coarse', got {label_type!r}")
        self.label_type = label_type
        super().__init__(train, transform, target_transform, root=root)

    def _cache_name(self):
        return self.url if self.label_type == 'fine' else self.url + '.coarse'

    def _load(self, path):
        name = 'train' if self.train else 'test'
        batch = _read_cifar_batches(path, [name])[name]
        key = b'fine_labels' if self.label_type == 'fine' else b'coarse_labels'
        return np.asarray(batch[b'data'], dtype=np.uint8), np.array(batch[key], dtype=int)

    @staticmethod
    def labels(label_type='fine'):
        """Class index to name for ``'fine'`` (100) or ``'coarse'`` (20) labels."""
        if label_type not in ('fine', 'coarse'):
            raise ValueError(f"label_type must be 'fine' or 'coarse', got {label_type!r}")
        return dict(enumerate(_CIFAR100_FINE if label_type == 'fine' else _CIFAR100_COARSE))


# =============================================================================
# Big datasets
# =============================================================================
class ImageNet(Dataset):
    """ImageNet: only the class names (:meth:`labels`) are provided, as in DeZero."""
    labels_url = ('https://gist.githubusercontent.com/yrevar/942d3a0ac09ec9e5eb3a/raw/'
                  '238f720ff059c1f82f368259d1ca4ffa5dd8f9f5/'
                  'imagenet1000_clsidx_to_labels.txt')

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("the ImageNet dataset itself is not provided; "
                                  "ImageNet.labels() gives the class names")

    @staticmethod
    def labels(root=None):
        """Class index to name, read from ``imagenet1000_clsidx_to_labels.txt``.

        The file (a Python dict literal) is read from ``~/.dezero`` or ``root``.
        """
        path = _local_file(ImageNet.labels_url, root=root)
        with open(path, 'r', encoding='utf-8') as f:
            text = f.read()
        try:
            labels = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"{path} is not a dict literal of ImageNet labels") from exc
        if not isinstance(labels, dict):
            raise ValueError(f"{path} is not a dict literal of ImageNet labels")
        return labels


class BigData(Dataset):
    """A dataset too big for memory: example ``i`` is read on access from ``.npy`` files.

    Example ``i`` is ``root/data/{i}.npy`` and its label ``root/label/{i}.npy``
    (the layout of the book's ``BigData``).

    Parameters
    ----------
    train : bool, default True
    transform, target_transform : callable, optional
    root : path, default '.'
        Directory holding ``data/`` and ``label/``.
    size : int, optional
        Number of examples; by default the number of ``.npy`` files in ``root/data``.
    """

    def __init__(self, train=True, transform=None, target_transform=None, *,
                 root='.', size=None):
        self.root = os.fspath(root)
        self.size = size
        super().__init__(train, transform, target_transform)

    def prepare(self):
        if self.size is None:
            data_dir = os.path.join(self.root, 'data')
            if not os.path.isdir(data_dir):
                raise FileNotFoundError(
                    f"BigData needs a directory {data_dir} of <index>.npy files")
            self.size = sum(1 for n in os.listdir(data_dir) if n.endswith('.npy'))
        elif isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be a non-negative int, got {self.size!r}")

    def __getitem__(self, index):
        if not np.isscalar(index):
            raise TypeError(f"a dataset is indexed by one integer, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} is out of range for {self.size} examples")
        x = np.load(os.path.join(self.root, 'data', f'{index}.npy'))
        t = np.load(os.path.join(self.root, 'label', f'{index}.npy'))
        return self.transform(x), self.target_transform(t)

    def __len__(self):
        return self.size


# =============================================================================
# Sequential datasets: SinCurve, Shakespear
# =============================================================================
class SinCurve(Dataset):
    """999 steps of a noisy sine wave (train) or of a clean cosine (test).

    The noise is uniform in [-0.05, 0.05).

    ``data[i]`` is the value at step ``i`` and ``label[i]`` the next one,
    both of shape ``(1,)``. The noise is drawn from NumPy's global random
    state in both splits, as in DeZero.
    """

    def prepare(self):
        num_data = 1000
        x = np.linspace(0, 2 * np.pi, num_data)
        noise = np.random.uniform(-0.05, 0.05, size=x.shape)
        y = np.sin(x) + noise if self.train else np.cos(x)
        y = y.astype(np.float64)
        self.data = y[:-1][:, np.newaxis]
        self.label = y[1:][:, np.newaxis]


class Shakespear(Dataset):
    """Tiny Shakespeare as character ids: ``data[i]`` is a character, ``label[i]`` the next.

    Reads ``shakespear.txt`` (the text of karpathy/char-rnn's
    ``tinyshakespeare/input.txt``) from ``~/.dezero`` or ``root``. Ids
    number the characters in order of first appearance; ``char_to_id`` and
    ``id_to_char`` map between them.
    """
    url = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
           'tinyshakespeare/input.txt')
    file_name = 'shakespear.txt'

    def __init__(self, train=True, transform=None, target_transform=None, *, root=None):
        self.root = root
        super().__init__(train, transform, target_transform)

    def prepare(self):
        path = _local_file(self.url, self.file_name, root=self.root)
        with open(path, 'r', encoding='utf-8') as f:
            text = f.read()
        char_to_id = {}
        for ch in text:
            if ch not in char_to_id:
                char_to_id[ch] = len(char_to_id)
        indices = np.array([char_to_id[ch] for ch in text], dtype=int)
        self.data = indices[:-1]
        self.label = indices[1:]
        self.char_to_id = char_to_id
        self.id_to_char = {i: ch for ch, i in char_to_id.items()}


# =============================================================================
# Utils
# =============================================================================
def _npz_path(filename, train, root):
    name = filename[filename.rfind('/') + 1:]
    suffix = '.train.npz' if train else '.test.npz'
    return os.path.join(utils.cache_dir if root is None else os.fspath(root), name + suffix)


def load_cache_npz(filename, train=False, *, root=None):
    """Arrays cached by :func:`save_cache_npz` for ``filename``, or ``(None, None)``.

    The cache file is ``<root>/<base name of filename>.train.npz`` (``.test.npz``),
    ``root`` defaulting to ``~/.dezero``: DeZero's file.
    """
    path = _npz_path(filename, train, root)
    if not os.path.exists(path):
        return None, None
    with np.load(path) as loaded:
        return loaded['data'], loaded['label']


def save_cache_npz(data, label, filename, train=False, *, root=None):
    """Save ``data`` and ``label`` where :func:`load_cache_npz` finds them; returns the path.

    An existing cache file is left as it is. A failed write leaves no partial file.
    """
    path = _npz_path(filename, train, root)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        np.savez_compressed(path, data=data, label=label)
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise
    return path
