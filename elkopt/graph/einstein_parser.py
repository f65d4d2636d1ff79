"""The einstein_v2 tokenizer and recursive-descent parser: text to `Statement`s.

`parse_expressions` is the entry point (re-exported by `elkopt.graph.einstein`, whose
docstring holds the grammar); the parser has one method per grammar rule. An infix
gather (``input0[G3, N2] g input1[N0, N1]``) is rewritten to the nested form
(``input0[input1[N0, N1], N2]``) once its statement is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any, NoReturn

from elkopt.graph.einstein_ast import (
    _LEVELS,
    _REDUCTIONS,
    Binary,
    Call,
    Const,
    EinsteinSyntaxError,
    Expr,
    Index,
    Number,
    Statement,
    TensorRef,
    Unary,
    walk,
)


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
_METHODS = ("call", "cast", "when", "dtype")
_OPERAND = "an operand (a tensor such as input0[N], an index name, a number, const(...) or '(')"


class _Parser:
    """Recursive-descent parser over the token list; one method per grammar rule."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.i = 0
        self.read_gather = False  # whether the current statement holds a `_Gather`

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
        self.read_gather = False
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
        if self.read_gather:
            output, rhs = _resolve_gathers(output, rhs, bounds, self.source)
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
        first = self.peek()
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
        if self.at_name("g"):  # primary() already took every 'g' that follows a tensor
            written = self.text_since(first)
            raise EinsteinSyntaxError(
                "a tensor reference such as input0[G, N] before 'g'", first.pos, self.source,
                found=f"'{written}'", length=len(written),
            )
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
                table = self.tensor_ref()
                return self.gather(token, table) if self.at_name("g") else table
            self.advance()
            return Index(token.text)
        if self.at("("):
            self.advance()
            inner = self.expression()
            self.expect(")", f"')' to close the parenthesis opened at column {token.pos}")
            return inner
        self.fail(_OPERAND)

    def gather(self, first: _Token, table: TensorRef) -> _Gather:
        """Read ``g tensor_ref`` after `table` (which starts at `first`)."""
        table_text = self.text_since(first)
        self.advance()  # g
        if self.peek().kind != "name" or not self.at("[", ahead=1):
            self.fail("a tensor reference after 'g' (the index tensor, e.g. input1[N0, N1])")
        self.read_gather = True
        return _Gather(table, self.tensor_ref(), first.pos, table_text)

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


# --------------------------------------------------------------------------- gather


@dataclass(frozen=True)
class _Gather:
    """``table g index`` as read, standing where an `Expr` goes until its statement ends.

    Which axis of `table` is gathered depends on the whole statement (the output and
    the where clause too), so `_resolve_gathers` rewrites it once the statement is read.
    """

    table: TensorRef
    index: TensorRef
    pos: int  # offset of `table` in the source, for errors
    text: str  # `table` as written


def _resolve_gathers(
    output: TensorRef, rhs: Expr, bounds: dict[str, int], source: str
) -> tuple[TensorRef, Expr]:
    """Return `output` and `rhs` with every `_Gather` replaced by its nested TensorRef."""
    uses = Counter(chain(_index_uses(output), _index_uses(rhs), bounds))
    return _resolved(output, uses, source), _resolved(rhs, uses, source)


def _index_uses(expr: Expr) -> Iterator[str]:
    """The name of every index in `expr`, once per use, those inside gathers included."""
    for node in walk(expr):
        if isinstance(node, Index):
            yield node.name
        elif isinstance(node, _Gather):
            yield from _index_uses(node.table)
            yield from _index_uses(node.index)


def _resolved(expr: Expr, uses: Counter[str], source: str) -> Expr:
    """`expr` rebuilt with its gathers nested: the gathered index becomes the index tensor."""
    if isinstance(expr, _Gather):
        axis = _gathered_axis(expr, uses, source)
        table = _resolved(expr.table, uses, source)
        indices = list(table.indices)
        indices[axis] = _resolved(expr.index, uses, source)
        return TensorRef(table.name, tuple(indices))
    if isinstance(expr, TensorRef):
        return TensorRef(expr.name, tuple(_resolved(index, uses, source) for index in expr.indices))
    if isinstance(expr, Unary):
        return Unary(expr.op, _resolved(expr.operand, uses, source))
    if isinstance(expr, Binary):
        left, right = _resolved(expr.left, uses, source), _resolved(expr.right, uses, source)
        return Binary(expr.op, left, right)
    if isinstance(expr, Call):
        args = tuple(_resolved(arg, uses, source) for arg in expr.args)
        return replace(expr, receiver=_resolved(expr.receiver, uses, source), args=args)
    return expr


def _gathered_axis(gather: _Gather, uses: Counter[str], source: str) -> int:
    """The axis of the gather's table indexed by a bare name used nowhere else in the statement.

    The Elk dumps were made by substituting a fresh name (``G3``) for the index tensor;
    no other test tells that name apart, so exactly one axis must pass this one.
    """
    free = [
        axis for axis, index in enumerate(gather.table.indices)
        if isinstance(index, Index) and uses[index.name] == 1
    ]
    if len(free) != 1:
        names = [gather.table.indices[axis].name for axis in free]
        found = ", ".join(names[:-1]) + " and " + names[-1] if names else "none"
        raise EinsteinSyntaxError(
            f"exactly one index of {gather.text} used nowhere else in the statement"
            " (the axis that 'g' gathers)",
            gather.pos, source, found=found, length=len(gather.text),
        )
    return free[0]
