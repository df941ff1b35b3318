"""The op table: every elementwise op of fastgrad, declared once.

Each row gives an op's name, its forward formula and one derivative per
input.  Formulas are short Python expressions over

* the inputs: ``x`` for a unary op, ``x0`` and ``x1`` for a binary one;
* ``y``, the output, and ``gy``, the gradient arriving at it (derivatives only);
* the op's constant parameters (``c``, ``slope`` ...);
* ``+ - * /``, comparisons, and the functions of :data:`FUNCTIONS`.

``fastgrad._codegen`` renders every row three ways: NumPy code on arrays
(forward, and backward with ``create_graph=False``), graph code on Variables
(backward with ``create_graph=True``, so it can be differentiated again) and
C code on doubles (the scalar path for 0-d float64).  The NumPy backward
comes twice: with weak constants (a Python number keeps the arrays' dtype,
NEP 50) and as DeZero evaluates the same formula on Variables, where every
number that meets an array is ``np.array(number)``, strongly typed
(``gy * (1 - y * y)`` is float64 for float32 ``y``).  The full face uses the
second unless ``Config.keep_dtype`` is set; for float64 arrays both give the
same bits, so the fast paths serve both there.  Comparisons and
``sign``/``where`` in a derivative are constants: no gradient flows through
them.  From the same row come the ``Function`` subclass, the lowercase
function and the test grids.

Adding an elementwise op is one ``Op(...)`` row here.  ``kernel=True`` routes
the array path through the compiled kernels of the backend (``fastgrad._ops``
or its NumPy twin ``fastgrad._reference``), which must then define
``<name>(*inputs, *params)`` and, if it exists, ``<name>_backward(gy,
*inputs, *params, out=None)``.  ``fused=True`` evaluates the row's own
formulas in one pass over memory instead of one NumPy pass per operation
(``fastgrad/_fused.pxi``).  Set either only where a benchmark shows it beats
NumPy.
"""
from dataclasses import dataclass

#: Functions a formula may call, and what they mean (NumPy's semantics).
FUNCTIONS = {
    "exp": "e ** a", "log": "natural logarithm", "sin": "sine", "cos": "cosine",
    "tan": "tangent", "tanh": "hyperbolic tangent", "sqrt": "square root",
    "abs": "absolute value", "sign": "-1, 0 or 1 (a constant in derivatives)",
    "pow": "pow(a, b) = a ** b", "maximum": "elementwise max, NaN-propagating",
    "minimum": "elementwise min, NaN-propagating", "clip": "clip(a, lo, hi)",
    "where": "where(cond, a, b) (a constant in derivatives)",
    "like": "like(a, b): a in b's dtype (a constant; DeZero's masks are in gy's dtype)",
}

_REQUIRED = object()


@dataclass(frozen=True)
class Op:
    """One elementwise op.

    Parameters
    ----------
    name : str
        The lowercase function, e.g. ``"exp"``.
    forward : str
        The output in terms of the inputs and parameters.
    grads : tuple of str
        The gradient of each input (its arity is the op's).
    cls : str, optional
        The Function class name (default: ``name`` capitalised).
    params : tuple of (name, default) or (name, default, label)
        Constant parameters after the inputs; ``REQUIRED`` has no default.
        The label names the parameter in error messages.
    scalar : bool
        Compute 0-d float64 values in C (bit-identical to NumPy's result).
    kernel : bool
        Use the backend's compiled kernels on arrays (see module docstring).
    fused : bool
        Evaluate forward and derivatives on float arrays in one pass over
        memory (blocks kept in cache), bit-identical to the NumPy path.
    reverse : str, optional
        Name of a swapped-operand function (``rsub(x0, x1) = x1 - x0``).
    doc : str
        One line for the docstrings.
    dezero_forward, dezero_grads : optional
        The forward / derivatives as DeZero 0.0.13 computes them, where they
        differ from ``forward`` / ``grads`` by more than the strength of
        their constants (which the renderer handles); used by the full face
        under DeZero's dtype rules.
    kernel_exact : (str, str), optional
        Conditions on the parameters under which ``kernel=True``'s forward
        and backward give NumPy's bits; under DeZero's dtype rules the NumPy
        formula runs elsewhere.
    """
    name: str
    forward: str
    grads: tuple
    cls: str = None
    params: tuple = ()
    scalar: bool = True
    kernel: bool = False
    fused: bool = False
    reverse: str = None
    doc: str = ""
    dezero_forward: str = None
    dezero_grads: tuple = None
    kernel_exact: tuple = None

    @property
    def class_name(self):
        return self.cls or self.name.capitalize()

    @property
    def arity(self):
        return len(self.grads)

    @property
    def inputs(self):
        return ("x",) if self.arity == 1 else tuple(f"x{i}" for i in range(self.arity))


REQUIRED = _REQUIRED

OPS = (
    # name      forward                  derivative per input
    Op("add", "x0 + x1", ("gy", "gy"), kernel=True, doc="x0 + x1"),
    Op("sub", "x0 - x1", ("gy", "-gy"), kernel=True, reverse="rsub", doc="x0 - x1"),
    Op("mul", "x0 * x1", ("gy * x1", "gy * x0"), kernel=True, doc="x0 * x1"),
    # DeZero squares with Pow (x1 ** 2), whose own derivative has a strong 2.
    Op("div", "x0 / x1", ("gy / x1", "gy * (-x0 / (x1 * x1))"), kernel=True,
       reverse="rdiv", doc="x0 / x1",
       dezero_grads=("gy / x1", "gy * (-x0 / pow(x1, 2))")),
    Op("neg", "-x", ("-gy",), kernel=True, doc="-x"),
    # The kernel computes small integer and half-integer powers by
    # multiplication (within a few ulp of NumPy's pow): exact for these.
    Op("pow", "pow(x, c)", ("c * pow(x, c - 1) * gy",),
       params=(("c", REQUIRED, "the exponent c"),),
       kernel=True, doc="x ** c for a constant exponent c (not a Variable)",
       kernel_exact=("c in (0, 1, -1, 2, 0.5)", "c in (1, 2, 3)")),
    Op("exp", "exp(x)", ("gy * y",), doc="e ** x"),
    Op("log", "log(x)", ("gy / x",), doc="natural logarithm of x"),
    Op("sin", "sin(x)", ("gy * cos(x)",), fused=True, doc="sine of x"),
    Op("cos", "cos(x)", ("gy * -sin(x)",), fused=True, doc="cosine of x"),
    Op("tan", "tan(x)", ("gy * (1 + y * y)",), fused=True, doc="tangent of x"),
    Op("tanh", "tanh(x)", ("gy * (1 - y * y)",), fused=True, doc="hyperbolic tangent of x"),
    Op("sqrt", "sqrt(x)", ("gy / (2 * y)",), fused=True, doc="square root of x"),
    Op("abs", "abs(x)", ("gy * sign(x)",), doc="absolute value of x"),
    Op("sigmoid", "tanh(x * 0.5) * 0.5 + 0.5", ("gy * y * (1 - y)",), fused=True,
       doc="logistic sigmoid 1 / (1 + e ** -x), computed through tanh"),
    Op("relu", "maximum(x, 0.0)", ("gy * (x > 0)",), cls="ReLU",
       doc="max(x, 0)"),
    # The mask is in gy's dtype, as DeZero builds it (and as a fused plan
    # computes it).  DeZero scales a copy of x in place: its result keeps
    # x's dtype even for a NumPy float64 slope.
    Op("leaky_relu", "where(x > 0, x, x * slope)", ("gy * like(where(x > 0, 1, slope), gy)",),
       cls="LeakyReLU", params=(("slope", 0.2),), doc="x where x > 0, else slope * x",
       dezero_forward="like(where(x > 0, x, x * slope), x)"),
    Op("clip", "clip(x, x_min, x_max)", ("gy * ((x >= x_min) * (x <= x_max))",),
       params=(("x_min", REQUIRED), ("x_max", REQUIRED)),
       doc="x limited to [x_min, x_max]"),
    Op("maximum", "maximum(x0, x1)", ("gy * (x0 >= x1)", "gy * (x0 < x1)"),
       doc="elementwise maximum (ties give the gradient to x0)"),
    Op("minimum", "minimum(x0, x1)", ("gy * (x0 <= x1)", "gy * (x0 > x1)"),
       doc="elementwise minimum (ties give the gradient to x0)"),
)

BY_NAME = {op.name: op for op in OPS}
