"""Parser for the einstein_v2 expression language of Antares / NNFusion graph dumps.

An NNFusion JSON graph dump lists one entry per node; its second field is the node's
text, a call such as::

    - einstein_v2(" output0[B, N] +=! input0[B, K] * input1[K, N] ; ",
                  input_dict={ "input0" : { "dtype" : "float16", "shape" : [32, 4096]} , ...})

`parse_node_text` takes that call apart (the expression string and the input_dict);
`parse_expressions` turns the expression string into a list of `Statement`s, a small
AST of frozen dataclasses; `to_source` prints statements back to einstein text, and
`parse_expressions(to_source(statements)) == statements` for anything the parser
returns. A tokenizer and a recursive-descent parser do the work (one method per
grammar rule below, the five binary-operator levels sharing one); errors raise `EinsteinSyntaxError`, which names the position, what
was expected and what was found.

Grammar (EBNF: ``{ x }`` repeats x zero or more times, ``[ x ]`` is optional; white
space between tokens is ignored)::

    source      = [ part ] { ";" [ part ] } ;
    part        = statement [ ANNOTATION ]
                | ANNOTATION ;                (* attaches to the statement before it *)
    statement   = tensor_ref assign_op expr [ "where" bound { "," bound } ] ;
    assign_op   = "=" | "+=!" | "+=" | ">=!" | ">=" | "<=!" | "<=" ;
    bound       = NAME "in" INTEGER ;
    expr        = conjunction { "|" conjunction } ;
    conjunction = comparison { "&" comparison } ;
    comparison  = sum { ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) sum } ;
    sum         = product { ( "+" | "-" ) product } ;
    product     = unary { ( "*" | "/" | "//" | "%" ) unary } ;
    unary       = "-" unary | postfix ;
    postfix     = primary { "." method } ;
    method      = "call" "(" STRING [ "," "[" [ expr_list ] "]" ] ")"
                | "cast" "(" ( STRING | postfix ) ")"  (* the postfix ends in .dtype() *)
                | "dtype" "(" ")"
                | "when" "(" condition "," expr [ "," "merge_op" "=" STRING ] ")" ;
    condition   = "[" expr_list "]" | expr ;
    primary     = NUMBER
                | "const" "(" [ "-" ] NUMBER ")"
                | tensor_ref
                | NAME                        (* an index variable *)
                | "(" expr ")" ;
    tensor_ref  = NAME "[" [ expr_list ] "]" ;
    expr_list   = expr { "," expr } ;

    NAME        = ( letter | "_" ) { letter | digit | "_" } ;
    NUMBER      = ( digits [ "." [ digits ] ] | "." digits )
                  [ ( "e" | "E" ) [ "+" | "-" ] digits ] ;
    INTEGER     = digits ;
    STRING      = "`" { char } "`" | '"' { char } '"' | "'" { char } "'" ;
    ANNOTATION  = "##" { any character but ";" } ;

Meaning:

* ``=`` computes every output element (element-wise or re-layout); ``+=!`` / ``+=``
  sums, ``>=!`` / ``>=`` takes the maximum and ``<=!`` / ``<=`` the minimum over the
  indices that appear on the right-hand side only (`Statement.reduction`,
  `reduced_indices`).
* Indices are expressions (`Expr`): usually affine arithmetic over index names, but a
  gather uses a tensor value as an index (``input0[input1[N].cast(`int32`), F]``);
  `is_affine` tells the two apart.
* ``x.call(`f`)`` applies f to x, ``x.call(`f`, [y, ...])`` passes more arguments;
  ``x.cast(`t`)`` converts to type t, ``x.cast(y.dtype())`` to the type of y;
  ``x.when(c, y)`` is x where c holds, else y, and ``x.when([c1, c2], y)`` needs every
  condition (``merge_op=`any```: any of them).
* ``const(v)`` is a constant; a bare number is one too.
* ``where N in 5120`` gives the extent of an index that no input shape bounds.
* ``## @: memcpy`` ends a statement with an annotation (a hint to the code generator):
  the text after ``##`` (and after a leading ``@:``) up to the next ``;`` is kept in
  `Statement.annotation` and plays no part in the expression.

Precedence, loosest first: ``|``, ``&``, comparisons, ``+ -``, ``* / // %``, unary
minus, method calls. All binary operators associate to the left. ``&`` and ``|`` bind
more loosely than comparisons (they join conditions: ``A < 4 & B > 0``), unlike Python.
A minus sign in front of a number makes a negative number (``-0.5`` is `Number(-0.5)`,
not a `Unary`), so the tree holds no negated literals.

Example::

    >>> [s] = parse_expressions("output0[B, N] +=! input0[B, K] * input1[K, N]")
    >>> s.reduction, reduced_indices(s), [t.name for t in tensors(s.rhs)]
    ('sum', ['K'], ['input0', 'input1'])
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

__all__ = [
    "Binary",
    "Call",
    "Const",
    "EinsteinSyntaxError",
    "Expr",
    "Index",
    "NodeText",
    "Number",
    "Statement",
    "TensorRef",
    "Unary",
    "functions",
    "index_names",
    "is_affine",
    "parse_expressions",
    "parse_node_text",
    "reduced_indices",
    "tensors",
    "to_source",
    "walk",
]


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


# ------------------------------------------------------------------------ tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str  # name, number, string, op, annotation, error (unknown character), end
    text: str  # the text as written
    pos: int  # offset in the source
    value: Any = None  # number value, string contents or annotation text

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind == "end":
            return "end of input"
        if self.kind == "annotation":
            return "'##'"
        if self.kind == "string":
            return self.text
        return f"'{self.text}'"


# Longest first, so that "+=!" is not read as "+=" and "!".
_PUNCTUATION = (
    "+=!", ">=!", "<=!",
    "==", "!=", "<=", ">=", "+=", "//",
    "+", "-", "*", "/", "%", "<", ">", "=", "&", "|", "(", ")", "[", "]", ",", ".", ";",
)
_QUOTES = "`\"'"


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_name_start(char: str) -> bool:
    return char.isalpha() or char == "_"


def _is_name_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _tokenize(source: str) -> list[_Token]:
    """Split `source` into tokens, ending with an "end" token.

    A character that starts no token becomes an "error" token, so that the parser can
    say what it expected there; malformed numbers and unterminated quoted names raise
    at once.
    """
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char.isspace():
            i += 1
        elif source.startswith("##", i):
            end = source.find(";", i)
            end = n if end < 0 else end
            text = source[i + 2 : end].strip()
            if text.startswith("@:"):
                text = text[2:].strip()
            tokens.append(_Token("annotation", source[i:end].rstrip(), i, text))
            i = end
        elif _is_name_start(char):
            end = i + 1
            while end < n and _is_name_char(source[end]):
                end += 1
            tokens.append(_Token("name", source[i:end], i))
            i = end
        elif _is_digit(char) or (char == "." and i + 1 < n and _is_digit(source[i + 1])):
            token = _read_number(source, i)
            tokens.append(token)
            i += len(token.text)
        elif char in _QUOTES:
            end = source.find(char, i + 1)
            if end < 0:
                raise EinsteinSyntaxError(
                    f"a closing {char} for the quoted name opened here", i, source,
                    found="end of input",
                )
            tokens.append(_Token("string", source[i : end + 1], i, source[i + 1 : end]))
            i = end + 1
        else:
            for punct in _PUNCTUATION:
                if source.startswith(punct, i):
                    tokens.append(_Token("op", punct, i))
                    i += len(punct)
                    break
            else:
                tokens.append(_Token("error", char, i))
                i += 1
    tokens.append(_Token("end", "", n))
    return tokens


def _read_number(source: str, start: int) -> _Token:
    """Read the number at `start`: digits, an optional fraction and exponent.

    A dot followed by a letter ends the number (``2.cast(...)`` is ``2`` then ``.cast``).
    A number run into letters, digits or a second fraction (``3x``, ``1e+``, ``1.5.2``)
    is malformed.
    """
    n = len(source)

    def digits(i: int) -> int:
        while i < n and _is_digit(source[i]):
            i += 1
        return i

    end = digits(start)
    if end < n and source[end] == "." and not (end + 1 < n and _is_name_start(source[end + 1])):
        end = digits(end + 1)
    malformed = False
    if end < n and source[end] in "eE":
        exponent = end + 1
        if exponent < n and source[exponent] in "+-":
            exponent += 1
        if exponent < n and _is_digit(source[exponent]):
            end = digits(exponent)
        else:
            malformed = True
    if malformed or (end < n and (_is_name_char(source[end]) or (
            source[end] == "." and end + 1 < n and _is_digit(source[end + 1])))):
        bad = start
        while bad < n and (_is_name_char(source[bad]) or source[bad] == "."
                           or (source[bad] in "+-" and source[bad - 1] in "eE")):
            bad += 1
        lexeme = source[start:bad]
        raise EinsteinSyntaxError(
            "a number such as 1, 2.5 or 1e-5", start, source, found=repr(lexeme), length=len(lexeme)
        )
    text = source[start:end]
    value: int | float = int(text) if all(map(_is_digit, text)) else float(text)
    return _Token("number", text, start, value)


# --------------------------------------------------------------------------- parser

_ASSIGN_OPS = tuple(_REDUCTIONS)
# Binary operator levels, loosest first; every level associates to the left.
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
_METHODS = ("call", "cast", "when", "dtype")
_OPERAND = "an operand (a tensor such as input0[N], an index name, a number, const(...) or '(')"


class _Parser:
    """Recursive-descent parser over the token list; one method per grammar rule."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.i = 0

    # -- token access

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at(self, *texts: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "op" and token.text in texts

    def at_name(self, name: str) -> bool:
        token = self.peek()
        return token.kind == "name" and token.text == name

    def fail(self, expected: str, token: _Token | None = None) -> NoReturn:
        token = token or self.peek()
        raise EinsteinSyntaxError(
            expected, token.pos, self.source, found=token.describe(), length=len(token.text)
        )

    def expect(self, text: str, expected: str) -> _Token:
        if not self.at(text):
            self.fail(expected)
        return self.advance()

    def expect_kind(self, kind: str, expected: str) -> _Token:
        if self.peek().kind != kind:
            self.fail(expected)
        return self.advance()

    def text_since(self, token: _Token) -> str:
        """The source text from `token` to the end of the last token read."""
        last = self.tokens[self.i - 1]
        return self.source[token.pos : last.pos + len(last.text)]

    # -- statements

    def source_rule(self) -> list[Statement]:
        statements: list[Statement] = []
        while True:
            token = self.peek()
            if token.kind == "end":
                return statements
            if self.at(";"):
                self.advance()
                continue
            if token.kind == "annotation":
                if not statements or statements[-1].annotation is not None:
                    self.fail("a statement before the annotation")
                self.advance()
                statements[-1] = replace(statements[-1], annotation=token.value)
            else:
                statements.append(self.statement())
            if not self.at(";") and self.peek().kind != "end":
                self.fail("';' or end of input")

    def statement(self) -> Statement:
        first = self.peek()
        if first.kind != "name" or not self.at("[", ahead=1):
            self.fail("a statement starting with an output tensor such as output0[N, ...]")
        output = self.tensor_ref()
        written = self.text_since(first)
        if not (self.peek().kind == "op" and self.peek().text in _ASSIGN_OPS):
            self.fail(f"an assignment operator ('=', '+=!', '>=!' or '<=!') after {written}")
        op = self.advance().text
        rhs = self.expression()
        bounds: dict[str, int] = {}
        if self.at_name("where"):
            self.advance()
            bounds = self.bounds()
            after = "',' and another bound, '##', ';' or end of input"
        else:
            after = "an operator, 'where', '##', ';' or end of input"
        annotation = None
        if self.peek().kind == "annotation":
            annotation = self.advance().value
        elif not self.at(";") and self.peek().kind != "end":
            self.fail(after)
        return Statement(output, op, rhs, bounds, annotation)

    def bounds(self) -> dict[str, int]:
        bounds: dict[str, int] = {}
        while True:
            name = self.expect_kind("name", "an index name in the where clause")
            if name.text in bounds:
                self.fail(f"an index not bounded yet ({name.text} already is)", name)
            if not self.at_name("in"):
                self.fail(f"'in' after {name.text} in the where clause")
            self.advance()
            extent = self.peek()
            if extent.kind != "number" or not isinstance(extent.value, int):
                self.fail(f"an integer extent for {name.text} after 'in'")
            self.advance()
            bounds[name.text] = extent.value
            if not self.at(","):
                return bounds
            self.advance()

    # -- expressions

    def expression(self, level: int = 0) -> Expr:
        """Parse one binary level (see `_LEVELS`); the last level hands over to unary."""
        if level == len(_LEVELS):
            return self.unary()
        left = self.expression(level + 1)
        while self.at(*_LEVELS[level]):
            op = self.advance().text
            left = Binary(op, left, self.expression(level + 1))
        return left

    def unary(self) -> Expr:
        if self.at("-"):
            self.advance()
            operand = self.unary()
            if isinstance(operand, Number):
                return Number(-operand.value)
            return Unary("-", operand)
        return self.postfix()

    def postfix(self) -> Expr:
        node = self.primary()
        while self.at("."):
            self.advance()
            method = self.peek()
            if method.kind != "name" or method.text not in _METHODS:
                self.fail("a method name (call, cast, when or dtype) after '.'")
            self.advance()
            self.expect("(", f"'(' after .{method.text}")
            if method.text == "dtype":
                self.expect(")", "')' to close .dtype(")
                node = Call(node, "dtype")
            elif method.text == "call":
                node = self.method_call(node)
            elif method.text == "cast":
                node = self.method_cast(node)
            else:
                node = self.method_when(node)
        return node

    def method_call(self, receiver: Expr) -> Call:
        function = self.expect_kind("string", "a function name in backquotes, e.g. `exp`")
        args: tuple[Expr, ...] = ()
        if self.at(","):
            self.advance()
            self.expect("[", f"'[' to open the argument list of .call({function.text}, [...])")
            args = self.expr_list("]", f"the argument list of .call({function.text}, ...)")
        self.expect(")", f"')' to close .call({function.text} ...)")
        return Call(receiver, "call", function.value, args)

    def method_cast(self, receiver: Expr) -> Call:
        if self.peek().kind != "string":  # the type of another value: x.cast(y.dtype())
            like = self.expression()
            if not (isinstance(like, Call) and like.method == "dtype"):
                self.fail("a type name in backquotes, e.g. `float32`, or a value's .dtype()")
            self.expect(")", "')' to close .cast(")
            return Call(receiver, "cast", None, (like,))
        dtype = self.expect_kind("string", "a type name in backquotes, e.g. `float32`")
        self.expect(")", f"')' to close .cast({dtype.text}")
        return Call(receiver, "cast", dtype.value)

    def method_when(self, receiver: Expr) -> Call:
        if self.at("["):
            self.advance()
            if self.at("]"):
                self.fail("a condition in the list of .when([...], ...)")
            conditions = self.expr_list("]", "the condition list of .when([...], ...)")
        else:
            conditions = (self.expression(),)
        self.expect(",", "',' and the value used where the .when condition fails")
        otherwise = self.expression()
        merge_op = None
        if self.at(","):
            self.advance()
            if not self.at_name("merge_op"):
                self.fail("merge_op=`any` or ')' to close .when(...)")
            self.advance()
            self.expect("=", "'=' after merge_op")
            merge_op = self.expect_kind("string", "a merge_op in backquotes, e.g. `any`").value
        self.expect(")", "')' to close .when(...)")
        return Call(receiver, "when", merge_op, (*conditions, otherwise))

    def primary(self) -> Expr:
        token = self.peek()
        if token.kind == "number":
            self.advance()
            return Number(token.value)
        if token.kind == "name":
            if token.text == "const" and self.at("(", ahead=1):
                return self.const()
            if self.at("[", ahead=1):
                return self.tensor_ref()
            self.advance()
            return Index(token.text)
        if self.at("("):
            self.advance()
            inner = self.expression()
            self.expect(")", f"')' to close the parenthesis opened at column {token.pos}")
            return inner
        self.fail(_OPERAND)

    def const(self) -> Const:
        self.advance()  # const
        self.advance()  # (
        sign = 1
        if self.at("-"):
            self.advance()
            sign = -1
        number = self.expect_kind("number", "a number inside const(...)")
        self.expect(")", "')' to close const(...)")
        return Const(sign * number.value)

    def tensor_ref(self) -> TensorRef:
        name = self.advance().text
        self.advance()  # [
        return TensorRef(name, self.expr_list("]", f"the index list of {name}"))

    def expr_list(self, close: str, what: str) -> tuple[Expr, ...]:
        """Parse ``[ expr { "," expr } ] close``; the opening bracket is already read."""
        items: list[Expr] = []
        if self.at(close):
            self.advance()
            return ()
        while True:
            items.append(self.expression())
            if self.at(","):
                self.advance()
            elif self.at(close):
                self.advance()
                return tuple(items)
            else:
                self.fail(f"'{close}' to close {what}")


def parse_expressions(source: str) -> list[Statement]:
    """Parse einstein_v2 text (statements separated by ``;``) into `Statement`s.

    Empty text (or only ``;`` and white space) gives an empty list. Raises
    `EinsteinSyntaxError` with positions relative to `source`.
    """
    return _Parser(source).source_rule()


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


# ------------------------------------------------------------------ node-text wrapper


@dataclass(frozen=True)
class NodeText:
    """The parts of a node's ``- einstein_v2("...", input_dict={...})`` text.

    `source` is the expression string (escapes decoded), `input_dict` maps each input
    name to ``{"dtype": str, "shape": list[int]}`` (other keys kept as found), and
    `ignored` names the arguments that were skipped: keywords such as
    ``extra_outputs``, or ``#n`` for an extra positional argument n (0-based).
    """

    source: str
    input_dict: dict[str, dict[str, Any]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    def statements(self) -> list[Statement]:
        """`parse_expressions` of `source` (error positions are relative to `source`)."""
        return parse_expressions(self.source)


_EXPRESSION_KEYWORDS = ("exprss", "expr")
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def parse_node_text(text: str) -> NodeText:
    """Split a node's text, ``- einstein_v2("<expressions>", input_dict={...})``.

    The expression string comes first (or as ``exprss=...``), the input_dict as
    ``input_dict={...}`` or as a positional dictionary; both may be missing (an empty
    expression, no inputs). The input_dict is isolated by bracket matching and read with
    `json.loads` (a Python literal with single quotes is accepted too); every input must
    have a ``dtype`` string and a ``shape`` list of integers. Other keyword arguments
    (``extra_outputs=[...]``) are skipped. The expressions themselves are not parsed:
    call `NodeText.statements` (or `parse_expressions`) for that.

    Raises `EinsteinSyntaxError` with positions relative to `text`.
    """
    i = _skip_space(text, 0)
    if text.startswith("-", i):
        i = _skip_space(text, i + 1)
    head = "einstein_v2"
    if not text.startswith(head, i) or text[i + len(head) : i + len(head) + 1].isalnum():
        raise EinsteinSyntaxError("'einstein_v2(' (after an optional '- ')", i, text)
    i = _skip_space(text, i + len(head))
    if not text.startswith("(", i):
        raise EinsteinSyntaxError("'(' after einstein_v2", i, text)
    i += 1
    source: str | None = None
    input_dict: dict[str, dict[str, Any]] | None = None
    ignored: list[str] = []
    position = 0
    while True:
        i = _skip_space(text, i)
        if i >= len(text):
            raise EinsteinSyntaxError("')' to close einstein_v2(...)", i, text)
        if text.startswith(")", i):
            i += 1
            break
        keyword, i = _keyword(text, i)
        value_start = i
        if i < len(text) and text[i] in "\"'":
            kind = "string"
            value, i = _read_string(text, i)
        elif text.startswith("{", i):
            kind = "dict"
            end = _match_bracket(text, i)
            value, i = _load_input_dict(text, i, end), end
        else:
            kind, value = "other", None
            i = _skip_value(text, i)
            if i == value_start:
                raise EinsteinSyntaxError("an argument of einstein_v2(...)", i, text)
        if keyword is None:
            if kind == "string" and source is None:
                source = value
            elif kind == "dict" and input_dict is None:
                input_dict = value
            else:
                ignored.append(f"#{position}")
            position += 1
        elif keyword == "input_dict":
            if kind != "dict":
                raise EinsteinSyntaxError("a {...} dictionary after input_dict=", value_start, text)
            if input_dict is not None:
                raise EinsteinSyntaxError("a single input_dict", value_start, text)
            input_dict = value
        elif keyword in _EXPRESSION_KEYWORDS:
            if kind != "string" or source is not None:
                raise EinsteinSyntaxError(
                    f"a single quoted expression string after {keyword}=", value_start, text
                )
            source = value
        else:
            ignored.append(keyword)
        i = _skip_space(text, i)
        if text.startswith(",", i):
            i += 1
        elif not text.startswith(")", i):
            raise EinsteinSyntaxError("',' or ')' after an argument of einstein_v2(...)", i, text)
    i = _skip_space(text, i)
    if i < len(text):
        raise EinsteinSyntaxError("end of the node text after einstein_v2(...)", i, text)
    return NodeText(source or "", input_dict or {}, tuple(ignored))


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _keyword(text: str, i: int) -> tuple[str | None, int]:
    """Read ``name =`` at `i` (not ``name ==``); return the name and where its value starts."""
    if i >= len(text) or not _is_name_start(text[i]):
        return None, i
    end = i + 1
    while end < len(text) and _is_name_char(text[end]):
        end += 1
    after = _skip_space(text, end)
    if text.startswith("=", after) and not text.startswith("==", after):
        return text[i:end], _skip_space(text, after + 1)
    return None, i


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string at `start`, decoding backslash escapes; return it and its end."""
    quote = text[start]
    escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(chars), i + 1
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            chars.append(escapes.get(following, "\\" + following))
            i += 2
            continue
        chars.append(char)
        i += 1
    raise EinsteinSyntaxError(
        f"a closing {quote} for the string opened here", start, text, found="end of text"
    )


def _match_bracket(text: str, start: int) -> int:
    """Return the offset just past the bracket closing the one at `start` (strings skipped)."""
    stack = [(text[start], start)]
    i = start + 1
    while i < len(text):
        char = text[i]
        if char in "\"'`":
            i = _read_string(text, i)[1]
            continue
        if char in _CLOSERS:
            stack.append((char, i))
        elif char in ")]}":
            opener, at = stack.pop()
            if _CLOSERS[opener] != char:
                raise EinsteinSyntaxError(
                    f"'{_CLOSERS[opener]}' to close the '{opener}' at column {at}", i, text
                )
            if not stack:
                return i + 1
        i += 1
    opener, at = stack[-1]
    expected = f"'{_CLOSERS[opener]}' to close the '{opener}' at column {at}"
    raise EinsteinSyntaxError(expected, i, text)


def _skip_value(text: str, i: int) -> int:
    """Skip an argument value that is neither a string nor a dictionary (``[...]``, ``3``)."""
    while i < len(text) and text[i] not in ",)":
        if text[i] in "\"'`":
            i = _read_string(text, i)[1]
        elif text[i] in _CLOSERS:
            i = _match_bracket(text, i)
        elif text[i] in "]}":
            raise EinsteinSyntaxError("',' or ')' after an argument of einstein_v2(...)", i, text)
        else:
            i += 1
    return i


def _load_input_dict(text: str, start: int, end: int) -> dict[str, dict[str, Any]]:
    """Read and check the input_dict in ``text[start:end]`` (a ``{...}`` block)."""
    raw = text[start:end]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise EinsteinSyntaxError(
                f"a JSON object for input_dict ({error.msg})", start + error.pos, text
            ) from None
    if not isinstance(value, dict):
        raise EinsteinSyntaxError("a JSON object for input_dict", start, text)
    inputs: dict[str, dict[str, Any]] = {}
    for name, spec in value.items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if (
            not isinstance(name, str)
            or not isinstance(spec, dict)
            or not isinstance(spec.get("dtype"), str)
            or not isinstance(shape, (list, tuple))
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        ):
            found = repr(spec)
            raise EinsteinSyntaxError(
                f'"dtype" (a string) and "shape" (a list of integers) for input {name!r}',
                start, text, found=found if len(found) <= 60 else found[:57] + "...",
            )
        inputs[name] = {**spec, "shape": list(shape)}
    return inputs
