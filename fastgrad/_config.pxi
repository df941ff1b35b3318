# Included by _core.pyx: graph-recording configuration.

# Config.enable_backprop is per thread.  The flag lives in a C thread-specific
# slot, encoded in the pointer value, so reading it costs a few nanoseconds
# and a new thread starts with the default (enabled).
cdef Py_tss_t* _backprop_key = PyThread_tss_alloc()
if _backprop_key == NULL or PyThread_tss_create(_backprop_key) != 0:
    raise MemoryError("fastgrad: cannot allocate thread-local storage")

cdef bint _backprop_enabled() noexcept:
    return PyThread_tss_get(_backprop_key) != <void*><size_t>1

cdef void _set_backprop(bint on) noexcept:
    PyThread_tss_set(_backprop_key, <void*><size_t>(2 if on else 1))


# Config.keep_dtype: the full face's dtype rules (see Config).  Process-wide,
# as Config.train is: one assignment at the top of a program covers every
# thread.  The engine reads it whenever a full-face function runs, forward or
# backward.
cdef bint _keep_dtype = False


cdef bint _keep_dtype_on() noexcept:
    return _keep_dtype


class _ConfigType(type):
    @property
    def enable_backprop(cls):
        """Record graphs for backprop (per thread; default True)."""
        return _backprop_enabled()

    @enable_backprop.setter
    def enable_backprop(cls, value):
        _set_backprop(bool(value))

    @property
    def keep_dtype(cls):
        """The full face keeps each array's dtype (default False: DeZero's rules)."""
        return _keep_dtype

    @keep_dtype.setter
    def keep_dtype(cls, value):
        global _keep_dtype
        _keep_dtype = bool(value)


class Config(metaclass=_ConfigType):
    """Global settings, as in DeZero.

    ``Config.enable_backprop`` is thread-local: reading or assigning it acts
    on the calling thread only, so ``no_grad()`` in one thread never turns
    off graph recording in another.  Other attributes a user adds are
    ordinary class attributes.  ``Config.train`` (default True) is read by
    layers that behave differently in training and inference (dropout).

    ``Config.keep_dtype`` (default False) chooses the dtype rules of the full
    face (``fastgrad.dezero``); the stage-2 face always keeps dtypes.

    * False: DeZero 0.0.13's behaviour on the installed NumPy, so that a
      DeZero program prints the same numbers.  A Python number operand of a
      Variable becomes ``np.array(number)``, which NumPy 2 treats as a
      strongly typed float64/int64 (``float32 * 2.0`` is float64); backward
      formulas written on Variables in DeZero (``gy * (1 - y * y)``) get the
      same strong constants; grads keep whatever dtype backward produced;
      ``Linear``/``Conv2d``/``Deconv2d`` create their weights with DeZero's
      expression (float64 under NumPy 2, with float32 biases).
    * True: every array keeps its dtype: Python numbers are weak (NEP 50),
      each grad is cast to its variable's dtype, and layers create weights
      of the dtype asked for (float32 by default).  ``float32`` data then
      stays float32 end to end, which is what DeZero's authors meant and
      what a float32 program needs for speed.

    It is process-wide (like ``train``) and read whenever a full-face
    function runs, forward or backward, so ``Config.keep_dtype = True`` at
    the top of a program, or ``with using_config('keep_dtype', True):``
    around a block, covers everything in it.  Switched between a forward
    pass and its backward, the backward follows the new setting (its
    formulas and whether grads are cast); layers read it when they create
    their weights.
    """
    train = True


class _UsingConfig:
    """Context manager behind ``using_config``: restores on exit, nests."""

    __slots__ = ("name", "value", "_saved")

    def __init__(self, name, value):
        self.name = name
        self.value = value
        self._saved = {}

    def __enter__(self):
        stack = self._saved.setdefault(threading.get_ident(), [])
        stack.append(getattr(Config, self.name))
        setattr(Config, self.name, self.value)
        return self

    def __exit__(self, *exc_info):
        ident = threading.get_ident()
        stack = self._saved[ident]
        setattr(Config, self.name, stack.pop())
        if not stack:
            del self._saved[ident]
        return False


def using_config(name, value):
    """Temporarily set ``Config.<name>`` to ``value`` inside a ``with`` block.

    The old value is restored on exit, also when the block raises.

    Examples
    --------
    >>> with using_config('enable_backprop', False):
    ...     y = x * 2        # no graph recorded
    """
    return _UsingConfig(name, value)


def no_grad():
    """Context manager that turns graph recording off (this thread only)."""
    return _UsingConfig("enable_backprop", False)


def test_mode():
    """Context manager that sets ``Config.train`` to False (inference)."""
    return _UsingConfig("train", False)


