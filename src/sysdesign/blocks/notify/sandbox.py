"""The Jinja environment notification templates run in.

Templates are written by people who are not the operator of the process
(anyone who may manage templates through the API), so they run in Jinja's
``ImmutableSandboxedEnvironment``: no attribute starting with ``_`` (no
``''.__class__.__mro__``), no internal attributes of functions and frames,
no method that changes a list, dict or set; each refusal is a
``SecurityError``. Undefined names are errors (``StrictUndefined``), never
an empty string in a message someone reads.

The sandbox guards access, not size, and Jinja folds constant expressions
while *compiling*: ``{{ 9**9**9**9 }}`` or ``{{ 'x' * 10**12 }}`` would hang
or exhaust memory the moment a template is validated. So the operators that
can grow a value by more than a sum (``*``, ``**``, ``%``, and ``+`` which
doubles a value in a loop) are intercepted, which also keeps them from
being folded, and refuse results over ``MAX_VALUE`` characters (or bits);
the filters that take a size (``center``, ``indent``, ``replace``, ``format``,
``batch``, ``slice``) check it first; ``str.format`` and ``lipsum`` are
gone; rendered output stops at ``MAX_VALUE`` (``templates.py``). What is
left is time: nested loops over large ranges still take as long as they
take, so rendering belongs in a delivery worker, never in a request.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, pass_eval_context
from jinja2.filters import do_batch, do_center, do_format, do_indent, do_replace, sync_do_slice
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_VALUE = 1_000_000  # characters (or items) of any value, and of a rendered part
MAX_INT_BITS = 65_536
MAX_PIECES = 10_000  # lists made by batch and slice
MAX_WIDTH = 1_000  # any width in a %-format
# A printf conversion: its flags, width and precision.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?.", re.DOTALL)


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} would be too large for a notification")


def _check_size(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise _too_big(what)


def _check_percent(fmt: Any) -> None:
    if not isinstance(fmt, str):
        return
    for match in _PERCENT.finditer(fmt):
        for number in match.groups():
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise _too_big("this %-format")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**":
        if (
            _is_int(left)
            and _is_int(right)
            and right > 0
            and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS
        ):
            raise _too_big("this power")
    elif operator == "*":
        if _is_int(left) and _is_int(right):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _too_big("this product")
            return
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and _is_int(times):
                _check_size(len(sequence) * times, "this repetition")
    elif operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check_size(len(left) + len(right), "this concatenation")
    elif operator == "%":
        _check_percent(left)


def _center(value: Any, width: int = 80) -> str:
    if _is_int(width):
        _check_size(width, "this centred text")
    return do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    step = width if _is_int(width) else len(str(width))
    _check_size(len(text) + (text.count("\n") + 1) * max(step, 0), "this indented text")
    return do_indent(s, width, first, blank)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    text, old_text, new_text = str(s), str(old), str(new)
    times = text.count(old_text) if old_text else len(text) + 1
    if _is_int(count) and count is not None and count >= 0:
        times = min(times, count)
    _check_size(len(text) + times * max(len(new_text) - len(old_text), 0), "this replacement")
    return do_replace(eval_ctx, s, old, new, count)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(value)
    return do_format(value, *args, **kwargs)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    if _is_int(linecount) and linecount > MAX_PIECES:
        raise _too_big("this batch")
    return do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    if _is_int(slices) and slices > MAX_PIECES:
        raise _too_big("this slice")
    return sync_do_slice(value, slices, fill_with)


def _no_str_format(*args: Any, **kwargs: Any) -> str:
    raise SecurityError("str.format is not available in templates: use {{ }} or |format")


class NotificationSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with the size guards above; ``html=True`` escapes every
    value (for HTML parts), ``html=False`` leaves text as it is."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, html: bool) -> None:
        super().__init__(
            autoescape=html,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,  # the renderer keeps its own cache, keyed by source
        )
        self.globals.pop("lipsum", None)
        self.filters.update(
            center=_center,
            indent=_indent,
            replace=_replace,
            format=_format,
            batch=_batch,
            slice=_slice,
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        if super().wrap_str_format(value) is None:
            return None
        return _no_str_format
