"""The einstein_v2 syntax tree: its error type, node dataclasses, helpers and printer.

The parser (`einstein_parser`) builds these nodes and the node-text reader
(`einstein_node`) reports errors with `EinsteinSyntaxError`; `to_source` prints a tree
back to einstein text. The public names are re-exported by `elkopt.graph.einstein`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


# --------------------------------------------------------------------------- errors


class EinsteinSyntaxError(ValueError):
    """A syntax error in einstein text, with where it is and what was expected.

    Attributes:
        expected: what the parser expected, e.g. ``"']' to close the index list of input0"``.
        position: 0-based offset of the offending text in `source`.
        source: the text being parsed (the expression string, or the whole node text for
            errors in the ``einstein_v2(...)`` wrapper).
        found: what was there instead, e.g. ``"';'"`` or ``"end of input"``.
        length: how many characters the caret line underlines.

    The message reads ``expected <expected> at column <position>, found <found>``
    followed by the offending line and a caret under the offending text; for a source of
    several lines it names the line (1-based) and the column within it.
    """

    def __init__(
        self, expected: str, position: int, source: str, found: str | None = None, length: int = 1
    ) -> None:
        self.expected = expected
        self.position = position
        self.source = source
        self.found = found if found is not None else _char_at(source, position)
        self.length = max(1, length)
        super().__init__(self._message())

    def __reduce__(self):
        # Rebuild from the fields (the default would call the class with the message
        # alone), so that the error survives pickling across worker processes.
        return type(self), (self.expected, self.position, self.source, self.found, self.length)

    @property
    def line(self) -> int:
        """1-based line of the error in `source`."""
        return self.source.count("\n", 0, self.position) + 1

    @property
    def column(self) -> int:
        """0-based column of the error within its line (the offset for one-line sources)."""
        return self.position - (self.source.rfind("\n", 0, self.position) + 1)

    def _message(self) -> str:
        start = self.source.rfind("\n", 0, self.position) + 1
        end = self.source.find("\n", self.position)
        text = self.source[start : end if end >= 0 else len(self.source)]
        where = f"column {self.column}"
        if self.line > 1 or end >= 0:
            where = f"line {self.line} column {self.column}"
        width = max(1, min(self.length, len(text) - self.column))
        caret = " " * self.column + "^" * width
        return f"expected {self.expected} at {where}, found {self.found}\n    {text}\n    {caret}"


def _char_at(source: str, position: int) -> str:
    return "end of input" if position >= len(source) else repr(source[position])


# ------------------------------------------------------------------------------ AST


@dataclass(frozen=True)
class Index:
    """An index variable, e.g. ``N`` in ``input0[N]``."""

    name: str


@dataclass(frozen=True)
class Number:
    """A numeric literal: int for ``1``, float for ``1.0`` or ``1e-5``; may be negative."""

    value: int | float


@dataclass(frozen=True)
class Const:
    """A constant built by ``const(v)``."""

    value: int | float


@dataclass(frozen=True)
class TensorRef:
    """A tensor element, ``name[i, j, ...]``; a scalar is ``name[0]`` or ``name[]``."""

    name: str
    indices: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Unary:
    """Unary minus applied to a non-literal operand (``-input0[N]``)."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary:
    """A binary operation: ``+ - * / // %``, ``== != < <= > >=`` or ``& |``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Call:
    """A method applied to `receiver`: ``.call``, ``.cast`` or ``.when``.

    * ``call``: `name` is the function (``exp``), `args` the extra arguments of
      ``x.call(`max`, [y])`` (empty for ``x.call(`exp`)``).
    * ``cast``: `name` is the target type (``float16``), `args` is empty; for
      ``x.cast(y.dtype())`` `name` is None and `args` holds ``y.dtype()``.
    * ``dtype``: the type of `receiver` (no name, no args).
    * ``when``: `args` is the conditions followed by the value used where they fail
      (see `conditions` and `otherwise`); `name` is the merge_op (``any``), or None for
      the default (all conditions must hold).
    """

    receiver: Expr
    method: str
    name: str | None = None
    args: tuple[Expr, ...] = ()

    @property
    def conditions(self) -> tuple[Expr, ...]:
        """The conditions of a ``.when`` (all but the last argument)."""
        self._require_when()
        return self.args[:-1]

    @property
    def otherwise(self) -> Expr:
        """The value of a ``.when`` where the conditions fail (the last argument)."""
        self._require_when()
        return self.args[-1]

    def _require_when(self) -> None:
        if self.method != "when":
            raise AttributeError(f"a .{self.method} call has no conditions")


Expr = Index | Number | Const | TensorRef | Unary | Binary | Call
"""Any expression node (an index expression or a right-hand side)."""

_REDUCTIONS = {
    "=": None,
    "+=!": "sum",
    "+=": "sum",
    ">=!": "max",
    ">=": "max",
    "<=!": "min",
    "<=": "min",
}


@dataclass(frozen=True)
class Statement:
    """One statement: ``output <op> rhs [where bounds] [## annotation]``.

    `op` is kept as written (``=``, ``+=!``, ``+=``, ``>=!``, ``>=``, ``<=!`` or ``<=``);
    `reduction` gives its meaning. `bounds` maps index names of the where clause to
    their extents, in the order written. `annotation` is the comment text after ``##``
    with a leading ``@:`` removed (``"memcpy"``), or None. Statements compare by value
    but are not hashable (`bounds` is a dict).
    """

    output: TensorRef
    op: str
    rhs: Expr
    bounds: dict[str, int] = field(default_factory=dict)
    annotation: str | None = None

    @property
    def reduction(self) -> str | None:
        """``"sum"``, ``"max"`` or ``"min"`` for a reduction, None for ``=``."""
        return _REDUCTIONS[self.op]


# ----------------------------------------------------------------------- precedence

# Binary operator levels, loosest first; every level associates to the left. The
# parser descends them in order and the printer adds parentheses from them.
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("|",),
    ("&",),
    ("==", "!=", "<", "<=", ">", ">="),
    ("+", "-"),
    ("*", "/", "//", "%"),
)
_PRECEDENCE = {op: level + 1 for level, ops in enumerate(_LEVELS) for op in ops}
_UNARY_PRECEDENCE = len(_LEVELS) + 1
_ATOM_PRECEDENCE = len(_LEVELS) + 2


# -------------------------------------------------------------------------- helpers


def walk(expr: Expr) -> Iterator[Expr]:
    """Yield `expr` and every expression inside it, parents first, in source order."""
    yield expr
    if isinstance(expr, TensorRef):
        children: tuple[Expr, ...] = expr.indices
    elif isinstance(expr, Unary):
        children = (expr.operand,)
    elif isinstance(expr, Binary):
        children = (expr.left, expr.right)
    elif isinstance(expr, Call):
        children = (expr.receiver, *expr.args)
    else:
        children = ()
    for child in children:
        yield from walk(child)


def tensors(expr: Expr) -> list[TensorRef]:
    """Every tensor reference in `expr` in source order, those inside indices included.

    A tensor read twice appears twice; pass ``statement.rhs`` for the inputs of a
    statement, ``statement.output`` for its output.
    """
    return [node for node in walk(expr) if isinstance(node, TensorRef)]


def index_names(expr: Expr) -> set[str]:
    """The index variables used anywhere in `expr` (indices, conditions, values)."""
    return {node.name for node in walk(expr) if isinstance(node, Index)}


def reduced_indices(statement: Statement) -> list[str]:
    """Index names used on the right-hand side but not on the output, first use first.

    For ``+=!``, ``>=!`` and ``<=!`` these are the indices reduced over (``K`` of a Dot).
    """
    on_output = index_names(statement.output)
    seen = dict.fromkeys(node.name for node in walk(statement.rhs) if isinstance(node, Index))
    return [name for name in seen if name not in on_output]


def functions(expr: Expr) -> list[str]:
    """Names of the functions applied by ``.call`` in `expr`, first use first, each once."""
    calls = (node.name for node in walk(expr) if isinstance(node, Call) and node.method == "call")
    return list(dict.fromkeys(calls))


_AFFINE_OPS = frozenset(("+", "-", "*", "/", "//", "%"))


def is_affine(expr: Expr) -> bool:
    """Whether `expr` uses only index names, integer literals and ``+ - * / // %``.

    A syntactic test ("affine-ish": ``N * M`` passes): False for tensor values (a
    gather index), floats, constants, comparisons and method calls.
    """
    if isinstance(expr, Index):
        return True
    if isinstance(expr, Number):
        return isinstance(expr.value, int) and not isinstance(expr.value, bool)
    if isinstance(expr, Unary):
        return expr.op == "-" and is_affine(expr.operand)
    if isinstance(expr, Binary):
        return expr.op in _AFFINE_OPS and is_affine(expr.left) and is_affine(expr.right)
    return False


# -------------------------------------------------------------------------- printer


def to_source(node: Statement | Sequence[Statement] | Expr) -> str:
    """Print a statement, a list of statements or an expression as einstein text.

    Parentheses appear only where precedence needs them, names of functions and types
    go in backquotes, and a list of statements is joined by ``"; "``. For what the parser
    returns, ``parse_expressions(to_source(statements)) == statements``. Raises
    ValueError for what the text cannot express (a non-finite number, an annotation
    holding ';').
    """
    if isinstance(node, Statement):
        return _statement_source(node)
    if isinstance(node, (list, tuple)):
        return "; ".join(_statement_source(statement) for statement in node)
    return _expr_source(node)


def _statement_source(statement: Statement) -> str:
    text = f"{_expr_source(statement.output)} {statement.op} {_expr_source(statement.rhs)}"
    if statement.bounds:
        text += " where " + ", ".join(f"{name} in {n}" for name, n in statement.bounds.items())
    if statement.annotation is not None:
        if ";" in statement.annotation:
            raise ValueError(f"an annotation cannot hold ';': {statement.annotation!r}")
        text += f" ## @: {statement.annotation}"
    return text


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Binary):
        return _PRECEDENCE[expr.op]
    if isinstance(expr, Unary) or (isinstance(expr, Number) and _is_negative(expr.value)):
        return _UNARY_PRECEDENCE
    return _ATOM_PRECEDENCE


def _is_negative(value: int | float) -> bool:
    return value < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0)


def _expr_source(expr: Expr, min_precedence: int = 0) -> str:
    """Print `expr`, in parentheses if it binds more loosely than `min_precedence`."""
    text = _bare_source(expr)
    return f"({text})" if _precedence(expr) < min_precedence else text


def _bare_source(expr: Expr) -> str:
    if isinstance(expr, Index):
        return expr.name
    if isinstance(expr, Number):
        return _number_source(expr.value)
    if isinstance(expr, Const):
        return f"const({_number_source(expr.value)})"
    if isinstance(expr, TensorRef):
        return f"{expr.name}[{_list_source(expr.indices)}]"
    if isinstance(expr, Unary):
        return f"{expr.op}{_expr_source(expr.operand, _ATOM_PRECEDENCE)}"
    if isinstance(expr, Binary):
        level = _PRECEDENCE[expr.op]
        left = _expr_source(expr.left, level)
        right = _expr_source(expr.right, level + 1)  # left-associative
        return f"{left} {expr.op} {right}"
    if isinstance(expr, Call):
        receiver = _expr_source(expr.receiver, _ATOM_PRECEDENCE)
        if expr.method == "call":
            extra = f", [{_list_source(expr.args)}]" if expr.args else ""
            return f"{receiver}.call({_quoted(expr.name)}{extra})"
        if expr.method == "cast":
            return f"{receiver}.cast({_quoted(expr.name) if expr.name is not None else _expr_source(expr.args[0])})"
        if expr.method == "dtype":
            return f"{receiver}.dtype()"
        if expr.method == "when":
            conditions = expr.conditions
            if len(conditions) == 1:
                condition = _expr_source(conditions[0])
            else:
                condition = f"[{_list_source(conditions)}]"
            merge = f", merge_op={_quoted(expr.name)}" if expr.name is not None else ""
            return f"{receiver}.when({condition}, {_expr_source(expr.otherwise)}{merge})"
        raise ValueError(f"unknown method .{expr.method}")
    raise TypeError(f"not an einstein expression: {expr!r}")


def _list_source(items: Sequence[Expr]) -> str:
    return ", ".join(_expr_source(item) for item in items)


def _quoted(name: str | None) -> str:
    if name is None or "`" in name:
        raise ValueError(f"cannot write {name!r} in backquotes")
    return f"`{name}`"


def _number_source(value: int | float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"einstein text has no literal for {value}")
    return repr(value)  # repr of a float reads back to the same float
