"""The ``einstein_v2("...", input_dict={...})`` text of a graph-dump node, taken apart.

`parse_node_text` isolates the expression string and the input_dict; `NodeText.statements`
parses the expressions. Both are re-exported by `elkopt.graph.einstein`.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

from elkopt.graph.einstein_ast import EinsteinSyntaxError, Statement
from elkopt.graph.einstein_parser import _is_name_char, _is_name_start, parse_expressions


# ------------------------------------------------------------------ node-text wrapper


@dataclass(frozen=True)
class NodeText:
    """The parts of a node's ``- einstein_v2("...", input_dict={...})`` text.

    `source` is the expression string (escapes decoded), `input_dict` maps each input
    name to ``{"dtype": str, "shape": list[int]}`` (other keys kept as found), and
    `ignored` names the arguments that were skipped: keywords such as
    ``extra_outputs``, or ``#n`` for an extra positional argument n (0-based).
    `annotation` is the text of a ``## ...`` comment after the call (``## @: memcpy``
    gives ``"memcpy"``), or None.
    """

    source: str
    input_dict: dict[str, dict[str, Any]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    annotation: str | None = None

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
    (``extra_outputs=[...]``) are skipped. A ``## ...`` annotation may follow the call
    (the published graphs write `` ## @: memcpy`` there). The expressions themselves are
    not parsed: call `NodeText.statements` (or `parse_expressions`) for that.

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
    annotation = None
    if text.startswith("##", i):
        annotation = text[i + 2:].strip()
        annotation = annotation[2:].strip() if annotation.startswith("@:") else annotation
        i = len(text)
    if i < len(text):
        raise EinsteinSyntaxError("'## <annotation>' or the end of the node text after einstein_v2(...)", i, text)
    return NodeText(source or "", input_dict or {}, tuple(ignored), annotation)


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
