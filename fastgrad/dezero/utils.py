"""Utilities with ``dezero.utils``'s names: graph drawing, gradient checks,
array helpers, conv sizes and the download cache.

Everything here accepts the Variables of both faces: ``fastgrad.Variable``
(grads are ndarrays) and ``fastgrad.dezero.Variable`` (grads are Variables).
"""
import os
import shutil
import subprocess

import numpy as np

from fastgrad._array_utils import array_of, int_pair, is_variable
from fastgrad.dezero import cuda
from fastgrad.dezero.core import Variable

# DeZero keeps these ndarray helpers in dezero.utils; fastgrad's structural
# ops share one implementation of them.
from fastgrad._array_utils import (  # noqa: F401 - DeZero's names
    logsumexp,
    max_backward_shape,
    reshape_sum_backward,
    sum_to,
)


__all__ = [
    "get_dot_graph", "plot_dot_graph", "sum_to", "reshape_sum_backward",
    "logsumexp", "max_backward_shape", "gradient_check", "numerical_grad",
    "array_equal", "array_allclose", "show_progress", "cache_dir", "get_file",
    "get_deconv_outsize", "get_conv_outsize", "pair",
]


# =============================================================================
# Computational graph as Graphviz DOT text
# =============================================================================
def _dot_label(text):
    # DeZero writes names verbatim; a quote or backslash in a name would end
    # or escape the quoted label, so those two are escaped (nothing else is).
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_var(v, verbose=False):
    label = "" if v.name is None else str(v.name)
    if verbose and v.data is not None:
        if v.name is not None:
            label += ": "
        label += str(v.shape) + " " + str(v.dtype)
    return '{} [label="{}", color=orange, style=filled]\n'.format(
        id(v), _dot_label(label))


def _dot_func(f):
    # A traced call names its function and op count.
    name = getattr(f, "dot_label", None) or type(f).__name__
    txt = '{} [label="{}", color=lightblue, style=filled, shape=box]\n'.format(
        id(f), _dot_label(name))
    for x in f.inputs:
        txt += "{} -> {}\n".format(id(x), id(f))
    for ref in f.outputs:
        y = ref()
        # An output nobody holds any more has no node to point to.
        if y is not None:
            txt += "{} -> {}\n".format(id(f), id(y))
    return txt


def get_dot_graph(output, verbose=True):
    """Graphviz DOT text of the graph that produced `output`.

    The nodes are `output` and every function and variable reachable
    backwards from it, in DeZero's order: the output, then for each function
    taken from a stack (the most recently found first) the function, its
    edges and its inputs.  Node ids are ``id()`` of the objects.  A variable
    without a creator gives a graph of that one node.

    Parameters
    ----------
    output : Variable
        The variable the graph ends at.
    verbose : bool, default True
        Add each variable's shape and dtype to its label.

    Returns
    -------
    str
        ``'digraph g {\\n' + nodes and edges + '}'``.

    Examples
    --------
    >>> x = Variable(np.array(1.0), name='x')
    >>> print(get_dot_graph(-x, verbose=False))   # doctest: +SKIP
    digraph g {
    140... [label="", color=orange, style=filled]
    140... [label="Neg", color=lightblue, style=filled, shape=box]
    ...
    """
    if not is_variable(output):
        raise TypeError(
            "get_dot_graph expects a Variable, got {}".format(
                type(output).__name__))
    txt = _dot_var(output, verbose)
    funcs = []
    seen = set()

    def add_func(f):
        if f is not None and id(f) not in seen:
            funcs.append(f)
            seen.add(id(f))

    add_func(output.creator)
    while funcs:
        func = funcs.pop()
        txt += _dot_func(func)
        for x in func.inputs:
            txt += _dot_var(x, verbose)
            add_func(x.creator)
    return "digraph g {\n" + txt + "}"


def _graph_dir():
    return os.path.join(os.path.expanduser("~"), ".dezero")


def plot_dot_graph(output, verbose=True, to_file="graph.png"):
    """Render the graph that produced `output` to an image with Graphviz.

    The DOT text of :func:`get_dot_graph` is written to
    ``~/.dezero/tmp_graph.dot`` and rendered with
    ``dot ~/.dezero/tmp_graph.dot -T <ext> -o to_file``, the format being the
    extension of `to_file`.

    Parameters
    ----------
    output : Variable
        The variable the graph ends at.
    verbose : bool, default True
        Add each variable's shape and dtype to its label.
    to_file : str or path, default 'graph.png'
        Output file; its extension (png, pdf, svg, ...) picks the format.

    Returns
    -------
    IPython.display.Image or None
        The image for inline display when IPython is installed and can show
        the format, else None.

    Raises
    ------
    FileNotFoundError
        When Graphviz's ``dot`` program is not on PATH (the .dot file is
        still written).
    RuntimeError
        When ``dot`` fails.

    Examples
    --------
    >>> plot_dot_graph(y, verbose=False, to_file='y.png')   # doctest: +SKIP
    """
    to_file = os.fspath(to_file)
    extension = os.path.splitext(to_file)[1][1:]
    if not extension:
        raise ValueError(
            "plot_dot_graph: to_file={!r} has no extension; the extension "
            "names the output format, e.g. 'graph.png' or 'graph.pdf'".format(
                to_file))
    dot_graph = get_dot_graph(output, verbose)

    tmp_dir = _graph_dir()
    os.makedirs(tmp_dir, exist_ok=True)
    graph_path = os.path.join(tmp_dir, "tmp_graph.dot")
    with open(graph_path, "w") as f:
        f.write(dot_graph)

    cmd = ["dot", graph_path, "-T", extension, "-o", to_file]
    if shutil.which("dot") is None:
        raise FileNotFoundError(
            "plot_dot_graph needs the program 'dot' from Graphviz, which is "
            "not on PATH. Install Graphviz (Debian/Ubuntu: "
            "apt-get install graphviz; macOS: brew install graphviz; conda: "
            "conda install graphviz; others: https://graphviz.org/download/). "
            "The DOT source was written to {}; render it later with: {}"
            .format(graph_path, " ".join(cmd)))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            "plot_dot_graph: '{}' failed with exit status {}: {}".format(
                " ".join(cmd), proc.returncode, proc.stderr.strip()))

    # As in DeZero: the image for inline display in a notebook.
    try:
        from IPython import display
        return display.Image(filename=to_file)
    except Exception:
        return None


# =============================================================================
# Gradient check
# =============================================================================
def numerical_grad(f, x, *args, **kwargs):
    """Gradient of ``sum(f(x, *args, **kwargs))`` by central differences.

    Each element of `x` is moved by ``eps = 1e-4`` either way in place (and
    put back, also when `f` raises); `f` gets the ndarray, not a Variable.
    A read-only or integer `x` is copied first (integers to float64).

    Parameters
    ----------
    f : callable
        Takes the array (and `args`, `kwargs`), returns a Variable, an
        ndarray or a number.
    x : ndarray or Variable
        The point; a Variable stands for its ``data``.
    *args, **kwargs
        Passed on to `f`.

    Returns
    -------
    ndarray
        The gradient, shaped and typed like `x`.

    Examples
    --------
    >>> numerical_grad(lambda a: a ** 2, np.array([1.0, 2.0]))
    array([2., 4.])
    """
    eps = 1e-4
    x = array_of(x)
    if x is None:
        raise TypeError("numerical_grad: the Variable has no data (None)")
    xp = cuda.get_array_module(x)
    if xp is np:
        if not isinstance(x, np.ndarray):
            x = np.array(x)
        if not np.issubdtype(x.dtype, np.inexact):
            x = x.astype(np.float64)
        elif not x.flags.writeable:
            x = x.copy()
    grad = xp.zeros_like(x)

    def value(y):
        y = array_of(y)
        return xp.array(y, copy=True)

    for idx in np.ndindex(*x.shape):
        old = x[idx].copy()
        try:
            x[idx] = old + eps
            y1 = value(f(x, *args, **kwargs))
            x[idx] = old - eps
            y2 = value(f(x, *args, **kwargs))
        finally:
            x[idx] = old
        grad[idx] = (y1 - y2).sum() / (2 * eps)
    return grad


def _as_float64_variable(x):
    # The caller's Variable is left alone (DeZero overwrote its data and
    # accumulated into its grad); the check runs on a fresh float64 leaf.
    if is_variable(x):
        if x.data is None:
            raise TypeError("gradient_check: the Variable has no data (None)")
        return type(x)(cuda.as_numpy(x.data).astype(np.float64))
    return Variable(np.array(x, dtype=np.float64))


def gradient_check(f, x, *args, rtol=1e-4, atol=1e-5, **kwargs):
    """Compare the backprop gradient of `f` at `x` with a numerical one.

    `x` is taken as float64.  The backprop gradient is that of
    ``sum(f(x, *args, **kwargs))``; the numerical one comes from
    :func:`numerical_grad`.  When they differ, DeZero's diagnostics (the
    shapes and first ten values of both) are printed.

    Parameters
    ----------
    f : callable
        Takes a Variable (and `args`, `kwargs`), returns a Variable.
    x : ndarray or Variable
        The point to check at; a Variable is not modified.
    *args, **kwargs
        Passed on to `f`.
    rtol, atol : float
        Tolerances as in ``numpy.allclose``.

    Returns
    -------
    bool
        True when the two gradients agree within the tolerances.

    Examples
    --------
    >>> gradient_check(lambda v: v ** 3, np.random.rand(3))   # doctest: +SKIP
    True
    """
    x = _as_float64_variable(x)
    num_grad = numerical_grad(f, x, *args, **kwargs)
    y = f(x, *args, **kwargs)
    if not is_variable(y):
        raise TypeError(
            "gradient_check: f must return a Variable to backpropagate "
            "from, got {}".format(type(y).__name__))
    y.backward()
    if x.grad is None:
        # No path from x to y: the true gradient is zero.
        bp_grad = np.zeros_like(num_grad)
    else:
        bp_grad = cuda.as_numpy(array_of(x.grad))
    num_grad = cuda.as_numpy(num_grad)

    res = (bp_grad.shape == num_grad.shape
           and array_allclose(num_grad, bp_grad, rtol=rtol, atol=atol))
    if not res:
        print("")
        print("========== FAILED (Gradient Check) ==========")
        print("Numerical Grad")
        print(" shape: {}".format(num_grad.shape))
        print(" values: {} ...".format(str(num_grad.flatten()[:10])[1:-1]))
        print("Backprop Grad")
        print(" shape: {}".format(bp_grad.shape))
        print(" values: {} ...".format(str(bp_grad.flatten()[:10])[1:-1]))
    return bool(res)


def array_equal(a, b):
    """True if `a` and `b` have the same shape and elements.

    Parameters
    ----------
    a, b : ndarray, Variable or array-like
        A Variable stands for its ``data``.

    Returns
    -------
    bool

    Examples
    --------
    >>> array_equal(np.arange(3), [0, 1, 2])
    True
    """
    a = cuda.as_numpy(array_of(a))
    b = cuda.as_numpy(array_of(b))
    return bool(np.array_equal(a, b))


def array_allclose(a, b, rtol=1e-4, atol=1e-5):
    """True if `a` and `b` are elementwise equal within a tolerance.

    Parameters
    ----------
    a, b : ndarray, Variable or array-like
        A Variable stands for its ``data``.
    rtol, atol : float
        Tolerances as in ``numpy.allclose``.

    Returns
    -------
    bool

    Examples
    --------
    >>> array_allclose(np.array([1.0]), np.array([1.0 + 1e-7]))
    True
    """
    a = cuda.as_numpy(array_of(a))
    b = cuda.as_numpy(array_of(b))
    return bool(np.allclose(a, b, atol=atol, rtol=rtol))


# =============================================================================
# Download cache
# =============================================================================
def show_progress(block_num, block_size, total_size):
    """Print a 30-character download progress bar (a urlretrieve hook).

    Parameters
    ----------
    block_num, block_size : int
        Blocks transferred so far and the block size in bytes.
    total_size : int
        Size of the file in bytes; 0 or less when unknown.

    Examples
    --------
    >>> show_progress(5, 10, 100)   # doctest: +SKIP
    [#########.....................] 50.00%
    """
    downloaded = block_num * block_size
    if total_size <= 0:
        print("\r{} bytes".format(downloaded), end="")
        return
    p = min(downloaded / total_size * 100, 100.0)
    i = min(int(downloaded / total_size * 30), 30)
    print("\r[{}] {:.2f}%".format("#" * i + "." * (30 - i), p), end="")


cache_dir = os.path.join(os.path.expanduser("~"), ".dezero")


def get_file(url, file_name=None):
    """Path of the cached copy of the file at `url`, in :data:`cache_dir`.

    fastgrad does not download: when the file is not in the cache, the
    error says where to put it.

    Parameters
    ----------
    url : str
        Where the file comes from.
    file_name : str, optional
        Name in the cache; by default the last part of `url`.

    Returns
    -------
    str
        ``os.path.join(cache_dir, file_name)``.

    Raises
    ------
    FileNotFoundError
        When that file does not exist, naming the URL and the path.

    Examples
    --------
    >>> get_file('https://example.com/data/mnist.npz')   # doctest: +SKIP
    '/home/me/.dezero/mnist.npz'
    """
    if not isinstance(url, str):
        raise TypeError("get_file: url must be a str, got {}".format(
            type(url).__name__))
    if file_name is None:
        file_name = url[url.rfind("/") + 1:]
    if not file_name:
        raise ValueError(
            "get_file: cannot take a file name from url {!r}; pass "
            "file_name".format(url))
    file_path = os.path.join(cache_dir, file_name)
    if os.path.exists(file_path):
        return file_path
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError:
        pass
    raise FileNotFoundError(
        "get_file: {} is not in the cache and fastgrad does not download "
        "files. Download it yourself and place it at {} (for example: "
        "curl -L -o '{}' '{}')".format(url, file_path, file_path, url))


# =============================================================================
# Convolution sizes
# =============================================================================
def get_deconv_outsize(size, k, s, p):
    """Output size of a transposed convolution: ``s * (size - 1) + k - 2 * p``.

    Examples
    --------
    >>> get_deconv_outsize(4, 3, 2, 1)
    7
    """
    return s * (size - 1) + k - 2 * p


def get_conv_outsize(input_size, kernel_size, stride, pad):
    """Output size of a convolution.

    ``(input_size + 2 * pad - kernel_size) // stride + 1``

    Examples
    --------
    >>> get_conv_outsize(28, 3, 1, 1)
    28
    """
    if stride == 0:
        raise ValueError("get_conv_outsize: stride must not be 0")
    return (input_size + pad * 2 - kernel_size) // stride + 1


def pair(x):
    """``(x, x)`` for an int, `x` itself for a tuple of two ints.

    Raises
    ------
    ValueError
        For anything else.

    Examples
    --------
    >>> pair(3)
    (3, 3)
    """
    int_pair(x, "pair", lists=False, wrong_type=ValueError)
    # DeZero's values: the int twice, or the tuple itself.
    return x if isinstance(x, tuple) else (x, x)
