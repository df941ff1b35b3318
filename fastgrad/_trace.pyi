# Typing stub for the tracer (fastgrad/_trace.pyx).
from typing import Any, Callable, Generic, Optional, TypeVar, overload

class TraceWarning(UserWarning): ...
class TraceMismatchError(RuntimeError): ...

_F = TypeVar("_F", bound=Callable[..., Any])

class Traced(Generic[_F]):
    __wrapped__: _F
    __call__: _F
    def retrace(self) -> None: ...

@overload
def trace(fn: _F, *, check: Optional[int] = ...) -> Traced[_F]: ...
@overload
def trace(fn: None = ..., *, check: Optional[int] = ...) -> Callable[[_F], Traced[_F]]: ...
