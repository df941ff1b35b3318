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

On float32/float64 arrays every row's forward, and its backward for each
set of inputs that needs a gradient, are compiled (``fastgrad._formulas``)
into programs for the elementwise evaluator (``fastgrad/_eval.pyx``): one
pass over memory each, on every core, with NumPy's bits; the NumPy code
above serves everything else (broadcasting, other or mixed dtypes).
Adding an elementwise op is one ``Op(...)`` row here.
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
    reverse : str, optional
        Name of a swapped-operand function (``rsub(x0, x1) = x1 - x0``).
    doc : str
        One line for the docstrings.
    dezero_forward, dezero_grads : optional
        The forward / derivatives as DeZero 0.0.13 computes them, where they
        differ from ``forward`` / ``grads`` by more than the strength of
        their constants (which the renderer handles); used by the full face
        under DeZero's dtype rules.
    """
    name: str
    forward: str
    grads: tuple
    cls: str = None
    params: tuple = ()
    scalar: bool = True
    reverse: str = None
    doc: str = ""
    dezero_forward: str = None
    dezero_grads: tuple = None

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
    Op("add", "x0 + x1", ("gy", "gy"), doc="x0 + x1"),
    Op("sub", "x0 - x1", ("gy", "-gy"), reverse="rsub", doc="x0 - x1"),
    Op("mul", "x0 * x1", ("gy * x1", "gy * x0"), doc="x0 * x1"),
    # DeZero squares with Pow (x1 ** 2), whose own derivative has a strong 2.
    Op("div", "x0 / x1", ("gy / x1", "gy * (-x0 / (x1 * x1))"),
       reverse="rdiv", doc="x0 / x1",
       dezero_grads=("gy / x1", "gy * (-x0 / pow(x1, 2))")),
    Op("neg", "-x", ("-gy",), doc="-x"),
    # The evaluator computes small integer and half-integer powers by
    # multiplication (within 4 ulp of NumPy's power), NumPy's exact special
    # cases (2, 0.5, -1, 1) exactly, and only those under DeZero's rules.
    Op("pow", "pow(x, c)", ("c * pow(x, c - 1) * gy",),
       params=(("c", REQUIRED, "the exponent c"),),
       doc="x ** c for a constant exponent c (not a Variable)"),
    Op("exp", "exp(x)", ("gy * y",), doc="e ** x"),
    Op("log", "log(x)", ("gy / x",), doc="natural logarithm of x"),
    Op("sin", "sin(x)", ("gy * cos(x)",), doc="sine of x"),
    Op("cos", "cos(x)", ("gy * -sin(x)",), doc="cosine of x"),
    Op("tan", "tan(x)", ("gy * (1 + y * y)",), doc="tangent of x"),
    Op("tanh", "tanh(x)", ("gy * (1 - y * y)",), doc="hyperbolic tangent of x"),
    Op("sqrt", "sqrt(x)", ("gy / (2 * y)",), doc="square root of x"),
    Op("abs", "abs(x)", ("gy * sign(x)",), doc="absolute value of x"),
    Op("sigmoid", "tanh(x * 0.5) * 0.5 + 0.5", ("gy * y * (1 - y)",),
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
