"""The elementwise vocabulary: the op table's functions, defined in the engine.

Each row of ``fastgrad._optable.OPS`` is compiled into the engine
(``fastgrad._core``) as a ``Function`` class (``row.class_name``, e.g.
``Exp``), its lowercase function (``row.name``, ``exp``) and, for an op with
a swapped-operand form, that function too (``row.reverse``, ``rsub``).  This
module re-exports exactly those names, read from the table, so a new row is
part of the vocabulary (and of ``fastgrad.functions.__all__``) with nothing
else to edit.
"""
from fastgrad import _core
from fastgrad._optable import OPS


def _table_names():
    for op in OPS:
        yield op.class_name
        yield op.name
        if op.reverse:
            yield op.reverse


__all__ = list(_table_names())
globals().update({name: getattr(_core, name) for name in __all__})
