"""fastgrad.dezero datasets, data loaders and transforms against DeZero 0.0.13."""
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import dezero_numpy_int, import_dezero

import fastgrad
from fastgrad.dezero import datasets as fd
from fastgrad.dezero import dataloaders as fl
from fastgrad.dezero import transforms as ft


def dz(module):
    return import_dezero(f"dezero.{module}")


def spiral_theirs(train=True):
    # DeZero's get_spiral reads np.int when called.
    with dezero_numpy_int():
        return dz("datasets").Spiral(train=train)


def assert_same_array(ours, theirs):
    assert type(ours) is type(theirs)
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def rng_state():
    state = np.random.get_state()
    return state[0], state[1].copy(), state[2], state[3], state[4]


def assert_same_rng_state(a, b):
    assert a[0] == b[0] and a[2:] == b[2:]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HOME with an empty ~/.dezero, for fastgrad and for DeZero."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".dezero"
    cache.mkdir()
    # DeZero computes its cache directory once, at import.
    dzu, dzd = dz("utils"), dz("datasets")
    monkeypatch.setattr(dzu, "cache_dir", str(cache))
    monkeypatch.setattr(dzd, "cache_dir", str(cache))
    try:
        from fastgrad.dezero import utils
    except ImportError:
        pass
    else:   # fastgrad's cache directory is fixed at import too
        monkeypatch.setattr(utils, "cache_dir", str(cache))
    return cache


# ----------------------------------------------------------------------------
# files in the real formats
# ----------------------------------------------------------------------------
def write_mnist(directory, prefix, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels


def _pickle_like_python2(obj):
    # The CIFAR archives were pickled by Python 2 NumPy: protocol 2, with
    # NumPy's old module name in the array's reconstructor.
    raw = pickle.dumps(obj, protocol=2)
    return raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            raw = _pickle_like_python2(obj)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def write_cifar10(directory, n_per_batch=3, seed=0):
    rng = np.random.default_rng(seed)
    members, batches = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        batches[name] = (data, labels)
        members[f"cifar-10-batches-py/{name}"] = {
            b"batch_label": name.encode(), b"labels": labels, b"data": data,
            b"filenames": [b"x.png"] * n_per_batch}
    members["cifar-10-batches-py/batches.meta"] = {b"label_names": [b"a"] * 10}
    write_tar(os.path.join(directory, "cifar-10-python.tar.gz"), members)
    return batches


def write_cifar100(directory, seed=0):
    rng = np.random.default_rng(seed)
    members, parts = {}, {}
    for name, n in [("train", 5), ("test", 4)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        coarse = [int(v) for v in rng.integers(0, 20, n)]
        parts[name] = (data, fine, coarse)
        members[f"cifar-100-python/{name}"] = {
            b"data": data, b"fine_labels": fine, b"coarse_labels": coarse}
    members["cifar-100-python/meta"] = {b"fine_label_names": []}
    write_tar(os.path.join(directory, "cifar-100-python.tar.gz"), members)
    return parts


SHAKESPEARE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
               "All:\nSpeak, speak.\n")


# ----------------------------------------------------------------------------
# toy datasets
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_get_spiral_is_dezeros(train):
    with dezero_numpy_int():
        x_t, t_t = dz("datasets").get_spiral(train)
    after_t = rng_state()
    np.random.seed(0)   # ours must reseed on its own
    x_o, t_o = fd.get_spiral(train)
    after_o = rng_state()
    assert_same_array(x_o, x_t)
    assert_same_array(t_o, t_t)
    assert x_o.dtype == np.float32 and x_o.shape == (300, 2) and t_o.dtype == np.int64
    assert_same_rng_state(after_o, after_t)


def test_spiral_splits_differ_and_dataset_indexing():
    x_train, _ = fd.get_spiral(True)
    x_test, _ = fd.get_spiral(False)
    assert not np.array_equal(x_train, x_test)
    ours, theirs = fd.Spiral(train=False), spiral_theirs(train=False)
    assert len(ours) == len(theirs) == 300
    for i in [0, 7, np.int64(299), -1]:
        xo, to = ours[i]
        xt, tt = theirs[i]
        np.testing.assert_array_equal(xo, xt)
        assert to == tt


@pytest.mark.parametrize("train", [True, False])
def test_sin_curve_is_dezeros(train):
    np.random.seed(7)
    theirs = dz("datasets").SinCurve(train=train)
    after_t = rng_state()
    np.random.seed(7)
    ours = fd.SinCurve(train=train)
    after_o = rng_state()
    assert_same_array(ours.data, theirs.data)
    assert_same_array(ours.label, theirs.label)
    assert ours.data.shape == (999, 1)
    assert_same_rng_state(after_o, after_t)


def test_transforms_applied_on_access():
    ds = fd.Spiral(transform=lambda x: x * 2, target_transform=lambda t: t + 10)
    x, t = ds[3]
    np.testing.assert_array_equal(x, ds.data[3] * 2)
    assert t == ds.label[3] + 10


def test_dataset_without_labels_and_bad_index():
    class Points(fd.Dataset):
        def prepare(self):
            self.data = np.arange(6.0).reshape(3, 2)

    ds = Points()
    x, t = ds[1]
    np.testing.assert_array_equal(x, [2.0, 3.0])
    assert t is None
    with pytest.raises(TypeError, match="one integer"):
        ds[[0, 1]]
    with pytest.raises(ValueError, match="prepare"):
        len(fd.Dataset())


def test_big_data_reads_examples_on_access(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "label").mkdir()
    for i in range(3):
        np.save(tmp_path / "data" / f"{i}.npy", np.full((2, 2), i, dtype=np.float32))
        np.save(tmp_path / "label" / f"{i}.npy", np.array(i))
    ds = fd.BigData(root=tmp_path, transform=lambda x: x + 1)
    assert len(ds) == 3
    x, t = ds[2]
    np.testing.assert_array_equal(x, np.full((2, 2), 3.0))
    assert t == 2
    assert ds[-1][1] == 2
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    assert len(fd.BigData(root=tmp_path, size=2)) == 2
    with pytest.raises(FileNotFoundError, match="data"):
        fd.BigData(root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="size"):
        fd.BigData(root=tmp_path, size=-1)


# ----------------------------------------------------------------------------
# MNIST
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_mnist_from_the_cache_is_dezeros(home, train):
    prefix = "train" if train else "t10k"
    images, labels = write_mnist(home, prefix, 5, seed=int(train))
    theirs = dz("datasets").MNIST(train=train)
    ours = fd.MNIST(train=train)
    assert_same_array(ours.data, theirs.data)
    assert_same_array(ours.label, theirs.label)
    assert ours.data.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(ours.data[:, 0], images)
    assert len(ours) == 5
    for i in range(5):
        xo, to = ours[i]
        xt, tt = theirs[i]
        assert_same_array(xo, xt)
        assert to == tt
    assert fd.MNIST.labels() == dz("datasets").MNIST.labels()


def test_mnist_from_a_root_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    images, labels = write_mnist(tmp_path, "t10k", 4, seed=3)
    ds = fd.MNIST(train=False, transform=None, root=tmp_path)
    np.testing.assert_array_equal(ds.data[:, 0], images)
    np.testing.assert_array_equal(ds.label, labels)
    x, t = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == np.uint8


def test_missing_file_names_the_url_and_the_path(home):
    with pytest.raises(FileNotFoundError) as info:
        fd.MNIST()
    message = str(info.value)
    assert "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz" in message
    assert str(home / "train-images-idx3-ubyte.gz") in message
    with pytest.raises(FileNotFoundError, match="shakespear.txt"):
        fd.Shakespear()
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        fd.CIFAR10(root=home / "elsewhere")


def test_mnist_rejects_a_file_of_another_format(home):
    write_mnist(home, "train", 2, seed=0)
    with gzip.open(home / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"not an idx file at all")
    with pytest.raises(ValueError, match="idx"):
        fd.MNIST()


# ----------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------
def test_cifar10_test_split_is_dezeros(home):
    write_cifar10(home)
    theirs = dz("datasets").CIFAR10(train=False)
    os.remove(home / "cifar-10-python.tar.gz.test.npz")   # DeZero's cache
    ours = fd.CIFAR10(train=False)
    assert_same_array(ours.data, theirs.data)
    assert_same_array(ours.label, theirs.label)
    assert ours.data.shape == (3, 3, 32, 32)
    for i in range(3):
        xo, to = ours[i]
        xt, tt = theirs[i]
        assert_same_array(xo, xt)
        assert to == tt
    assert fd.CIFAR10.labels() == dz("datasets").CIFAR10.labels()


def test_cifar10_train_split_matches_dezeros_batches(home):
    write_cifar10(home, n_per_batch=2)
    dzd = dz("datasets")
    loader = dzd.CIFAR10.__new__(dzd.CIFAR10)   # DeZero's batch readers only
    path = str(home / "cifar-10-python.tar.gz")
    data = np.concatenate([loader._load_data(path, i, "train") for i in range(1, 6)])
    label = np.concatenate([loader._load_label(path, i, "train") for i in range(1, 6)])
    ours = fd.CIFAR10(train=True)
    np.testing.assert_array_equal(ours.data, data.reshape(-1, 3, 32, 32))
    assert_same_array(ours.label, label)
    # DeZero keeps its train images as float64; the default transform gives
    # the same float32 values from either.
    transform = dzd.CIFAR10.__init__.__defaults__[1]
    for i in [0, 9]:
        assert_same_array(ours[i][0], transform(data.reshape(-1, 3, 32, 32)[i].astype(np.float64)))


def test_cifar10_cache_is_shared_with_dezero(home):
    write_cifar10(home)
    ours = fd.CIFAR10(train=False)
    assert (home / "cifar-10-python.tar.gz.test.npz").exists()
    data, label = dz("datasets").load_cache_npz(fd.CIFAR10.url, False)
    np.testing.assert_array_equal(data, ours.data)
    np.testing.assert_array_equal(label, ours.label)
    os.remove(home / "cifar-10-python.tar.gz")   # the cache alone is enough now
    again = fd.CIFAR10(train=False)
    assert_same_array(again.data, ours.data)
    assert_same_array(again.label, ours.label)


@pytest.mark.parametrize("train", [True, False])
def test_cifar100_fine_labels_are_dezeros(home, train):
    write_cifar100(home)
    theirs = dz("datasets").CIFAR100(train=train)
    for f in home.glob("*.npz"):
        os.remove(f)
    ours = fd.CIFAR100(train=train)
    assert_same_array(ours.data, theirs.data)
    assert_same_array(ours.label, theirs.label)


def test_cifar100_coarse_labels_and_names(home):
    parts = write_cifar100(home)
    fine = fd.CIFAR100(train=False)
    coarse = fd.CIFAR100(train=False, label_type="coarse")   # not the fine cache
    np.testing.assert_array_equal(fine.label, parts["test"][1])
    np.testing.assert_array_equal(coarse.label, parts["test"][2])
    np.testing.assert_array_equal(coarse.data, fine.data)
    names = fd.CIFAR100.labels("fine")
    assert len(names) == 100 and len(set(names.values())) == 100
    assert names[0] == "apple" and names[99] == "worm"
    assert fd.CIFAR100.labels("coarse") == dz("datasets").CIFAR100.labels("coarse")
    with pytest.raises(ValueError, match="label_type"):
        fd.CIFAR100(label_type="medium")


def test_cifar_archive_objects_other_than_arrays_are_refused(home):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    write_tar(home / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="system"):
        fd.CIFAR10(train=False)


# ----------------------------------------------------------------------------
# ImageNet labels, Shakespeare
# ----------------------------------------------------------------------------
def test_imagenet_labels_are_dezeros(home):
    (home / "imagenet1000_clsidx_to_labels.txt").write_text(
        "{0: 'tench, Tinca tinca',\n 1: 'goldfish, Carassius auratus',\n 2: 'great white shark'}")
    assert fd.ImageNet.labels() == dz("datasets").ImageNet.labels()
    with pytest.raises(NotImplementedError, match="labels"):
        fd.ImageNet()


def test_imagenet_labels_file_is_not_executed(home):
    (home / "imagenet1000_clsidx_to_labels.txt").write_text("__import__('os').getcwd()")
    with pytest.raises(ValueError, match="dict literal"):
        fd.ImageNet.labels()


def test_shakespear_is_dezeros(home):
    (home / "shakespear.txt").write_text(SHAKESPEARE)
    theirs = dz("datasets").Shakespear()
    ours = fd.Shakespear()
    assert_same_array(ours.data, theirs.data)
    assert_same_array(ours.label, theirs.label)
    assert ours.char_to_id == theirs.char_to_id
    assert ours.id_to_char == theirs.id_to_char
    assert len(ours) == len(SHAKESPEARE) - 1


# ----------------------------------------------------------------------------
# optional plotting and Pillow
# ----------------------------------------------------------------------------
def test_show_draws_with_matplotlib(home, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    monkeypatch.setattr(plt, "show", lambda: None)
    write_mnist(home, "train", 3, seed=0)
    write_cifar10(home)
    np.random.seed(1)
    fd.MNIST().show(row=2, col=2)
    fd.CIFAR10(train=False).show(row=1, col=3)
    plt.close("all")


def test_imports_without_matplotlib_or_pillow():
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "sys.modules['matplotlib.pyplot'] = None\n"
        "sys.modules['PIL'] = None\n"
        "import numpy as np\n"
        "from fastgrad.dezero import datasets, transforms, dataloaders\n"
        "assert not transforms.pil_available\n"
        "for make in (lambda: transforms.Resize(4), lambda: transforms.ToArray(),\n"
        "             lambda: transforms.Convert(), lambda: transforms.CenterCrop(2),\n"
        "             lambda: transforms.ToPIL(), lambda: transforms.RandomHorizontalFlip()):\n"
        "    try:\n"
        "        make()\n"
        "    except ImportError as exc:\n"
        "        assert 'Pillow' in str(exc), exc\n"
        "        assert isinstance(exc, transforms.PillowNotAvailableError)\n"
        "    else:\n"
        "        raise AssertionError('no error without Pillow')\n"
        "ds = datasets.Spiral()\n"
        "ds.data = ds.data.reshape(-1, 1, 1, 2)\n"
        "try:\n"
        "    datasets.MNIST.show(ds)\n"
        "except ImportError as exc:\n"
        "    assert 'matplotlib' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no error without matplotlib')\n"
        "x, t = next(dataloaders.DataLoader(ds, 4))\n"
        "print('ok')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ----------------------------------------------------------------------------
# DataLoader / SeqDataLoader
# ----------------------------------------------------------------------------
def collect(loader, epochs):
    batches = []
    for _ in range(epochs):
        batches.append([(x.copy(), t.copy()) for x, t in loader])
    return batches


@pytest.mark.parametrize("batch_size", [1, 7, 30, 300, 1000])
@pytest.mark.parametrize("shuffle", [True, False])
def test_data_loader_gives_dezeros_batches(batch_size, shuffle):
    dzl, dzd = dz("dataloaders"), dz("datasets")
    np.random.seed(11)
    theirs = collect(dzl.DataLoader(spiral_theirs(), batch_size, shuffle=shuffle), 3)
    after_t = rng_state()
    np.random.seed(11)
    ours = collect(fl.DataLoader(fd.Spiral(), batch_size, shuffle=shuffle), 3)
    after_o = rng_state()
    assert len(ours[0]) == -(-300 // batch_size)
    assert [len(e) for e in ours] == [len(e) for e in theirs]
    for epoch_o, epoch_t in zip(ours, theirs):
        for (xo, to), (xt, tt) in zip(epoch_o, epoch_t):
            assert_same_array(xo, xt)
            assert_same_array(to, tt)
    assert_same_rng_state(after_o, after_t)


def test_data_loader_next_reset_and_stop():
    np.random.seed(3)
    dzl, dzd = dz("dataloaders"), dz("datasets")
    theirs = dzl.DataLoader(spiral_theirs(), 100)
    ours = fl.DataLoader(fd.Spiral(), 100)
    for _ in range(3):
        xo, to = ours.next()
        xt, tt = theirs.next()
        assert_same_array(xo, xt)
        assert_same_array(to, tt)
    assert ours.iteration == 3
    with pytest.raises(StopIteration):
        next(ours)
    assert ours.iteration == 0      # reset for the next epoch
    ours.reset()
    assert ours.iteration == 0
    assert ours.max_iter == 3 and ours.data_size == 300


def test_data_loader_without_labels():
    class Points(fd.Dataset):
        def prepare(self):
            self.data = np.arange(10.0).reshape(5, 2)

    x, t = next(fl.DataLoader(Points(), 2, shuffle=False))
    np.testing.assert_array_equal(x, [[0.0, 1.0], [2.0, 3.0]])
    assert t.tolist() == [None, None]


@pytest.mark.parametrize("batch_size", [1, 3, 10, 999, 1500])
def test_seq_data_loader_gives_dezeros_batches(batch_size):
    dzl, dzd = dz("dataloaders"), dz("datasets")
    np.random.seed(0)
    theirs = collect(dzl.SeqDataLoader(dzd.SinCurve(), batch_size), 2)
    np.random.seed(0)
    ours = collect(fl.SeqDataLoader(fd.SinCurve(), batch_size), 2)
    assert [len(e) for e in ours] == [len(e) for e in theirs]
    for epoch_o, epoch_t in zip(ours, theirs):
        for (xo, to), (xt, tt) in zip(epoch_o, epoch_t):
            assert_same_array(xo, xt)
            assert_same_array(to, tt)


def test_data_loader_bad_arguments():
    class Empty(fd.Dataset):
        def prepare(self):
            self.data = np.zeros((0, 2))

    with pytest.raises(ValueError, match="empty"):
        fl.DataLoader(Empty(), 2)
    with pytest.raises(ValueError, match="empty"):
        fl.SeqDataLoader(Empty(), 2)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="batch_size"):
            fl.DataLoader(fd.Spiral(), bad)
        with pytest.raises(ValueError, match="batch_size"):
            fl.SeqDataLoader(fd.Spiral(), bad)
    for bad in (2.5, "4", None, True):
        with pytest.raises(TypeError, match="batch_size"):
            fl.DataLoader(fd.Spiral(), bad)


def test_data_loader_gpu_switches():
    loader = fl.DataLoader(fd.Spiral(), 10)
    loader.to_cpu()
    assert loader.gpu is False
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="CuPy"):
            loader.to_gpu()
        with pytest.raises(ImportError, match="CuPy"):
            fl.DataLoader(fd.Spiral(), 10, gpu=True)
        assert loader.gpu is False
    else:
        loader.to_gpu()
        assert loader.gpu is True


# ----------------------------------------------------------------------------
# transforms
# ----------------------------------------------------------------------------
ARRAYS = {
    "uint8": np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8),
    "float32": np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32),
    "float64": np.random.default_rng(2).standard_normal((3, 4, 5)),
}


@pytest.mark.parametrize("name", list(ARRAYS))
@pytest.mark.parametrize("mean,std", [(0, 1), (0., 255.), (0.5, 0.5),
                                      ([0.1, 0.2, 0.3], [1.5, 2.0, 3.0]),
                                      ((1, 2, 3), 2.0), (np.float64(0.5), np.float32(3))])
def test_normalize_is_dezeros(name, mean, std):
    array = ARRAYS[name]
    assert_same_array(ft.Normalize(mean, std)(array), dz("transforms").Normalize(mean, std)(array))


def test_normalize_single_and_mismatched_channel_values():
    array = ARRAYS["float64"]
    np.testing.assert_array_equal(ft.Normalize([0.5], [2.0])(array), (array - 0.5) / 2.0)
    np.testing.assert_array_equal(ft.Normalize(np.array(0.5))(array), array - 0.5)
    with pytest.raises(ValueError, match="per-channel"):
        ft.Normalize([1.0, 2.0])(array)


@pytest.mark.parametrize("name", list(ARRAYS))
def test_array_transforms_are_dezeros(name):
    dzt = dz("transforms")
    array = ARRAYS[name]
    pairs = [
        (ft.Flatten(), dzt.Flatten()),
        (ft.AsType(), dzt.AsType()),
        (ft.AsType(np.float16), dzt.AsType(np.float16)),
        (ft.ToFloat(), dzt.ToFloat()),
        (ft.ToInt(), dzt.ToInt()),
        (ft.ToInt(np.int8), dzt.ToInt(np.int8)),
        (ft.Compose([ft.Flatten(), ft.ToFloat(), ft.Normalize(0., 255.)]),
         dzt.Compose([dzt.Flatten(), dzt.ToFloat(), dzt.Normalize(0., 255.)])),
        (ft.Compose(), dzt.Compose()),
        (ft.Compose([]), dzt.Compose([])),
    ]
    for ours, theirs in pairs:
        assert_same_array(ours(array), theirs(array))
    assert ft.ToFloat is ft.AsType


@pytest.fixture
def image():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(4)
    return Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))


def test_image_transforms_are_dezeros(image):
    dzt = dz("transforms")
    pairs = [
        (ft.Convert(), dzt.Convert()),
        (ft.Convert("L"), dzt.Convert("L")),
        (ft.Convert("BGR"), dzt.Convert("BGR")),
        (ft.Resize(5), dzt.Resize(5)),
        (ft.Resize((7, 4)), dzt.Resize((7, 4))),
        (ft.CenterCrop(5), dzt.CenterCrop(5)),
        (ft.CenterCrop((6, 4)), dzt.CenterCrop((6, 4))),
        (ft.CenterCrop((7, 8)), dzt.CenterCrop((7, 8))),
    ]
    for ours, theirs in pairs:
        a, b = ours(image), theirs(image)
        assert a.mode == b.mode and a.size == b.size
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for dtype in (np.float32, np.uint8):
        assert_same_array(ft.ToArray(dtype)(image), dzt.ToArray(dtype)(image))
    array = ft.ToArray(np.uint8)(image)
    assert ft.ToArray()(array) is array
    back = ft.ToPIL()(array)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(dzt.ToPIL()(array)))
    np.testing.assert_array_equal(np.asarray(back), np.asarray(image))


def test_image_transform_extras(image):
    gray = ft.Convert("L")(image)
    array = ft.ToArray()(gray)
    assert array.shape == (1, 9, 12) and array.dtype == np.float32
    assert ft.ToPIL()(array.astype(np.uint8)).size == (12, 9)
    with pytest.raises(TypeError, match="PIL image"):
        ft.ToArray()([1, 2, 3])
    with pytest.raises(ValueError, match="size"):
        ft.Resize(2.5)
    with pytest.raises(ValueError, match="size"):
        ft.CenterCrop((1, 2, 3))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ft.ToPIL()(np.zeros((3, 3), np.uint8))


def test_random_horizontal_flip(image):
    flipped = np.asarray(image)[:, ::-1]
    np.testing.assert_array_equal(np.asarray(ft.RandomHorizontalFlip(1.0)(image)), flipped)
    assert ft.RandomHorizontalFlip(0.0)(image) is image
    array = ft.ToArray()(image)
    np.testing.assert_array_equal(ft.RandomHorizontalFlip(1.0)(array), array[..., ::-1])
    np.random.seed(0)
    draws = np.random.rand(20) < 0.5
    np.random.seed(0)
    flip = ft.RandomHorizontalFlip()
    got = [ft.ToArray()(flip(image))[0, 0, 0] != array[0, 0, 0] for _ in range(20)]
    assert got == list(draws) or array[0, 0, 0] == array[0, 0, -1]
    with pytest.raises(ValueError, match="probability"):
        ft.RandomHorizontalFlip(1.5)
