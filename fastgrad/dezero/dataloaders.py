"""Mini-batch iterators over datasets, with DeZero 0.0.13's names and order.

``DataLoader`` shuffles with ``np.random.permutation`` at construction and
after every epoch, exactly when DeZero does, so the same seed gives the same
batches.
"""
import numbers

import numpy as np

__all__ = ["DataLoader", "SeqDataLoader"]


def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("gpu=True needs CuPy, which is not installed") from exc
    return cupy


class DataLoader:
    """Iterate over a dataset in mini-batches ``(x, t)`` of stacked arrays.

    One pass is an epoch of ``ceil(len(dataset) / batch_size)`` batches (the
    last may be smaller); at its end the loader resets itself (reshuffling)
    and raises ``StopIteration``, so it can be iterated again.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``len()`` and integer indexing giving ``(x, t)``.
    batch_size : int
        Examples per batch, at least 1.
    shuffle : bool, default True
        Visit the examples in a fresh random order each epoch.
    gpu : bool, default False
        Return CuPy arrays (needs CuPy).

    Examples
    --------
    >>> for x, t in DataLoader(Spiral(), batch_size=30):   # doctest: +SKIP
    ...     pass
    """

    def __init__(self, dataset, batch_size, shuffle=True, gpu=False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        data_size = len(dataset)
        if data_size == 0:
            raise ValueError("the dataset is empty: a DataLoader needs at least one example")
        if gpu:
            _cupy()
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.data_size = data_size
        self.max_iter = -(-data_size // self.batch_size)
        self.gpu = gpu

        self.reset()

    def reset(self):
        """Start a new epoch: iteration 0, and a new order if shuffling."""
        self.iteration = 0
        if self.shuffle:
            self.index = np.random.permutation(len(self.dataset))
        else:
            self.index = np.arange(len(self.dataset))

    def __iter__(self):
        return self

    def _batch(self, batch_index):
        batch = [self.dataset[i] for i in batch_index]
        xp = _cupy() if self.gpu else np
        x = xp.array([example[0] for example in batch])
        t = xp.array([example[1] for example in batch])
        self.iteration += 1
        return x, t

    def __next__(self):
        if self.iteration >= self.max_iter:
            self.reset()
            raise StopIteration
        start = self.iteration * self.batch_size
        return self._batch(self.index[start:start + self.batch_size])

    def next(self):
        """The next batch (``__next__``)."""
        return self.__next__()

    def to_cpu(self):
        """Return NumPy arrays from now on."""
        self.gpu = False

    def to_gpu(self):
        """Return CuPy arrays from now on (needs CuPy)."""
        _cupy()
        self.gpu = True


class SeqDataLoader(DataLoader):
    """Batches for truncated backpropagation through time, without shuffling.

    The dataset is cut into ``batch_size`` equal streams; batch ``k`` holds
    example ``k`` of each stream (indices wrap around at the end).

    Parameters
    ----------
    dataset : Dataset
    batch_size : int
        Number of parallel streams, at least 1.
    gpu : bool, default False
    """

    def __init__(self, dataset, batch_size, gpu=False):
        super().__init__(dataset=dataset, batch_size=batch_size, shuffle=False, gpu=gpu)

    def __next__(self):
        if self.iteration >= self.max_iter:
            self.reset()
            raise StopIteration
        jump = self.data_size // self.batch_size
        return self._batch([(i * jump + self.iteration) % self.data_size
                            for i in range(self.batch_size)])
