"""Names for parameters that are the same on every rank."""
import numpy as np


def _is_layer(obj):
    return isinstance(getattr(obj, "_params", None), (set, frozenset, list, tuple)) \
        and callable(getattr(obj, "params", None))


def _is_param(obj):
    return hasattr(obj, "data") and hasattr(obj, "grad") and not _is_layer(obj)


def _walk_layer(layer, prefix, out, seen, active):
    if id(layer) in active:
        raise ValueError(f"the layer at {prefix.rstrip('.') or 'the top'} contains itself")
    active.add(id(layer))
    attrs = layer.__dict__
    for name in sorted(layer._params):
        obj = attrs.get(name)
        if _is_layer(obj):
            _walk_layer(obj, f"{prefix}{name}.", out, seen, active)
        elif _is_param(obj) and id(obj) not in seen:
            # A parameter shared by two layers is named (and averaged) once.
            seen.add(id(obj))
            out.append((f"{prefix}{name}", obj))
    active.discard(id(layer))


def named_params(target):
    """List ``(name, parameter)`` pairs in an order that is the same on every rank.

    Parameters
    ----------
    target : Layer, Model, Optimizer or sequence of Parameters
        A layer or model is walked through its registered attributes, sorted
        by name (``"l0.W"``, ``"l0.b"``, ``"l1.W"``...); an optimizer stands
        for its ``target``; a list or tuple of parameters keeps its order and
        names them ``"[0]"``, ``"[1]"``...  Another object with a
        ``params()`` method is taken in that order (it must not depend on the
        process).  A parameter reachable twice is listed once.

    Returns
    -------
    list of (str, Parameter)

    Examples
    --------
    >>> model = MLP((10, 3))                        # doctest: +SKIP
    >>> [name for name, p in named_params(model)]   # doctest: +SKIP
    ['l0.W', 'l0.b', 'l1.W', 'l1.b']
    """
    if hasattr(target, "update") and hasattr(target, "hooks") and hasattr(target, "target"):
        if target.target is None:
            raise RuntimeError(f"{type(target).__name__} has no target yet: call "
                               "optimizer.setup(model) before its first update()")
        target = target.target
    out = []
    if _is_layer(target):
        _walk_layer(target, "", out, set(), set())
        return out
    if isinstance(target, (list, tuple)):
        items = [(f"[{i}]", p) for i, p in enumerate(target)]
    elif callable(getattr(target, "params", None)):
        items = [(f"params()[{i}]", p) for i, p in enumerate(target.params())]
    elif _is_param(target):
        items = [("[0]", target)]
    else:
        raise TypeError("expected a Layer or Model, an Optimizer, or a list of Parameters, "
                        f"got {type(target).__name__}")
    seen = set()
    for name, p in items:
        if not _is_param(p):
            raise TypeError(f"{name} is a {type(p).__name__}, not a Parameter")
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def _set_grad_array(param, array):
    grad = param.grad
    if isinstance(grad, np.ndarray):
        param.grad = array
    else:
        grad.data = array
