"""The einstein_v2 parser (elkopt.graph.einstein) on small hand-written expressions."""

import json
import pickle
import random

import pytest

from elkopt.graph.einstein import (
    Binary,
    Call,
    Const,
    EinsteinSyntaxError,
    Index,
    Number,
    Statement,
    TensorRef,
    Unary,
    functions,
    index_names,
    is_affine,
    parse_expressions,
    parse_node_text,
    reduced_indices,
    tensors,
    to_source,
)

B, K, N, F, N1, N2 = (Index(name) for name in ("B", "K", "N", "F", "N1", "N2"))


def ref(name, *indices):
    return TensorRef(name, tuple(indices))


def one(source: str) -> Statement:
    [statement] = parse_expressions(source)
    return statement


# One sample per construct; every one must round-trip through to_source.
DOT = "output0[B, N] +=! input0[B, K] * input1[K, N]"
MAX = "output0[B] >=! input0[B, N]"
MIN = "output0[B] <=! input0[B, N]"
SUM_NO_BANG = "output0[B] += input0[B, N]"
BROADCAST = "output0[B, N] = input0[B, N] + input1[N]"
DIVIDE = "output0[B, N] = input0[B, N] / 128"
DIVIDE_CONST = "output0[B, N] = input0[B, N] / const(8.0).cast(`float16`)"
EXP = "output0[B, N] = input0[B, N].call(`exp`)"
RELU = "output0[B, N] = input0[B, N].call(`max`, [const(0).cast(`float16`)])"
CAST = "output0[B, N] = input0[B, N].cast(`float32`)"
CAST_QUOTED = 'output0[B, N] = input0[B, N].cast("float16")'
SIGMOID = ("output0[B, N] = const(1).cast(`float16`) / "
           "(const(1).cast(`float16`) + (-input0[B, N]).call(`exp`))")
CONCAT = "output0[N1] = input0[N1].when(N1 < 5120, input1[N1 - 5120]) where N1 in 10240"
SLICE = "output0[N2] = input0[N2 + 5120] where N2 in 5120"
RESHAPE = "output0[B, N2] = input0[B, N2 / 128 % 40, N2 % 128] where N2 in 5120, B in 32"
GATHER = "output0[N, F] = input0[input1[N].cast(`int32`), F]"
RMSNORM = (" mediate0[B] +=! input0[B, N] * input0[B, N] ; "
           "output0[B, N] = input0[B, N] / (mediate0[B] / 4096 + 1e-5).call(`sqrt`) * input1[N] ; ")
ANNOTATED = "output0[B, N] = input0[B, N] ## @: memcpy"
PLAN = ("output0[B, N] = input0[B, N] where B in 4 ## @: plan/elementwise_v1 ; "
        "output1[B] = input0[B, 0]")
PAD = ("pad[N, C, H0, W0] = input0[N, C, H0 - 1, W0 - 1]"
       ".when([H0 >= 1, H0 < 57, W0 >= 1, W0 < 57], "
       "const(0.0).cast(`float16`), merge_op=`any`) where H0 in 58, W0 in 58")
FLOOR_DIV = "output0[N, K] = input0[N // 56, N % 56 * 2 + K // 3] where K in 9"
SCALARS = "output0[0] +=! input0[N]; output1[] = output0[0] * -0.5"
LOGIC = ("output0[N] = const(1.0).when((input0[N] > 0.0) & (input0[N] < 6.0) | input0[N] == 0.0, "
         "0.0)")
TANH = ("output0[N] = (input0[N] * 0.7978845608 * (1.0 + 0.044715 * input0[N] * input0[N]))"
        ".call(`tanh`)")
NESTED = "output0[N] = -(input0[N] - (input1[N] - 2)) * (3 - -input0[N]) % 7"

SAMPLES = [DOT, MAX, MIN, SUM_NO_BANG, BROADCAST, DIVIDE, DIVIDE_CONST, EXP, RELU, CAST,
           CAST_QUOTED, SIGMOID, CONCAT, SLICE, RESHAPE, GATHER, RMSNORM, ANNOTATED, PLAN,
           PAD, FLOOR_DIV, SCALARS, LOGIC, TANH, NESTED]


# ----------------------------------------------------------------------- statements


def test_dot_is_a_sum_over_the_contracted_index():
    s = one(DOT)
    assert s == Statement(ref("output0", B, N), "+=!",
                          Binary("*", ref("input0", B, K), ref("input1", K, N)))
    assert s.reduction == "sum"
    assert reduced_indices(s) == ["K"]
    assert [t.name for t in tensors(s.rhs)] == ["input0", "input1"]


def test_reductions_max_min_and_without_bang():
    assert one(MAX).reduction == "max" and reduced_indices(one(MAX)) == ["N"]
    assert one(MIN).op == "<=!" and one(MIN).reduction == "min"
    assert one(SUM_NO_BANG).op == "+=" and one(SUM_NO_BANG).reduction == "sum"
    assert one(BROADCAST).reduction is None


def test_broadcast_add_reduces_nothing():
    s = one(BROADCAST)
    assert s.rhs == Binary("+", ref("input0", B, N), ref("input1", N))
    assert reduced_indices(s) == []
    assert index_names(s.rhs) == {"B", "N"}


def test_division_by_constants():
    assert one(DIVIDE).rhs == Binary("/", ref("input0", B, N), Number(128))
    assert one(DIVIDE_CONST).rhs == Binary(
        "/", ref("input0", B, N), Call(Const(8.0), "cast", "float16"))


def test_call_exp_and_max_with_arguments():
    assert one(EXP).rhs == Call(ref("input0", B, N), "call", "exp")
    relu = one(RELU).rhs
    assert relu == Call(ref("input0", B, N), "call", "max", (Call(Const(0), "cast", "float16"),))
    assert functions(relu) == ["max"]
    assert functions(one(RMSNORM.split(";")[1]).rhs) == ["sqrt"]


def test_cast_with_backquotes_or_double_quotes():
    assert one(CAST).rhs == Call(ref("input0", B, N), "cast", "float32")
    assert one(CAST_QUOTED).rhs == Call(ref("input0", B, N), "cast", "float16")


def test_const_and_unary_minus():
    s = one(SIGMOID)
    one_half = Call(Const(1), "cast", "float16")
    exp = Call(Unary("-", ref("input0", B, N)), "call", "exp")
    assert s.rhs == Binary("/", one_half, Binary("+", one_half, exp))
    assert isinstance(s.rhs.left.receiver.value, int)


def test_when_concatenation_with_affine_offset():
    s = one(CONCAT)
    assert s.rhs == Call(ref("input0", N1), "when", None,
                         (Binary("<", N1, Number(5120)),
                          ref("input1", Binary("-", N1, Number(5120)))))
    assert s.rhs.conditions == (Binary("<", N1, Number(5120)),)
    assert s.rhs.otherwise == ref("input1", Binary("-", N1, Number(5120)))
    assert s.bounds == {"N1": 10240}
    assert is_affine(s.rhs.otherwise.indices[0])


def test_when_with_a_condition_list_and_merge_op():
    s = one(PAD)
    assert s.rhs.method == "when" and s.rhs.name == "any"
    assert len(s.rhs.conditions) == 4
    assert s.rhs.otherwise == Call(Const(0.0), "cast", "float16")
    assert s.bounds == {"H0": 58, "W0": 58}
    assert reduced_indices(s) == []
    # One condition in brackets is the same as one without.
    assert one("o[N] = i[N].when([N < 4], 0)") == one("o[N] = i[N].when(N < 4, 0)")


def test_where_clause_and_affine_indices():
    s = one(SLICE)
    assert s.bounds == {"N2": 5120}
    assert s.rhs == ref("input0", Binary("+", N2, Number(5120)))
    r = one(RESHAPE)
    assert list(r.bounds.items()) == [("N2", 5120), ("B", 32)]
    assert r.rhs.indices[1] == Binary("%", Binary("/", N2, Number(128)), Number(40))
    assert all(is_affine(index) for index in r.rhs.indices)
    f = one(FLOOR_DIV)
    assert f.rhs.indices[0] == Binary("//", N, Number(56))
    assert reduced_indices(f) == []


def test_gather_uses_a_tensor_value_as_index():
    s = one(GATHER)
    index = Call(ref("input1", N), "cast", "int32")
    assert s.rhs == ref("input0", index, F)
    assert not is_affine(index)
    assert [t.name for t in tensors(s.rhs)] == ["input0", "input1"]
    assert index_names(s.rhs) == {"N", "F"}


def test_is_affine():
    assert is_affine(one("o[N] = i[(A * 64 + B) / 2 - -N % 3]").rhs.indices[0])
    assert is_affine(Number(-5))
    assert not is_affine(Number(0.5))
    assert not is_affine(Const(1))
    assert not is_affine(Binary("<", N, Number(3)))
    assert not is_affine(ref("i", N))


def test_several_statements():
    first, second = parse_expressions(RMSNORM)
    assert first.output == ref("mediate0", B) and reduced_indices(first) == ["N"]
    assert second.output.name == "output0"
    assert [t.name for t in tensors(second.rhs)] == ["input0", "mediate0", "input1"]
    assert reduced_indices(second) == []
    assert parse_expressions("") == parse_expressions(" ; ;") == []


def test_scalars():
    first, second = parse_expressions(SCALARS)
    assert first.output == ref("output0", Number(0)) and reduced_indices(first) == ["N"]
    assert second.output == TensorRef("output1", ())
    assert second.rhs == Binary("*", ref("output0", Number(0)), Number(-0.5))


def test_comparisons_and_logic():
    rhs = one(LOGIC).rhs
    [condition] = rhs.conditions
    assert condition.op == "|"  # | binds loosest, then &, then comparisons
    assert condition.left.op == "&" and condition.right.op == "=="
    assert rhs.otherwise == Number(0.0)


def test_numbers():
    rhs = one("o[N] = i[N] * 1 + 1.0 + 1e-5 + -0.5 + .25 + 2E+3").rhs
    numbers = [node.value for node in _numbers(rhs)]
    assert numbers == [1, 1.0, 1e-5, -0.5, 0.25, 2000.0]
    assert isinstance(numbers[0], int) and isinstance(numbers[1], float)
    assert one("o[N] = i[N] - 2").rhs == Binary("-", ref("i", N), Number(2))


def _numbers(expr):
    if isinstance(expr, Number):
        return [expr]
    if isinstance(expr, Binary):
        return _numbers(expr.left) + _numbers(expr.right)
    return []


def test_annotations():
    s = one(ANNOTATED)
    assert s.annotation == "memcpy"
    assert s.rhs == ref("input0", B, N)
    first, second = parse_expressions(PLAN)
    assert first.annotation == "plan/elementwise_v1" and first.bounds == {"B": 4}
    assert second.annotation is None and second.rhs == ref("input0", B, Number(0))
    # An annotation after the ';' belongs to the statement before it.
    [s] = parse_expressions("output0[N] = input0[N]; ## @: tensorCoreConfig=(0, 1)")
    assert s.annotation == "tensorCoreConfig=(0, 1)"


# ------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("source", SAMPLES)
def test_round_trip(source):
    statements = parse_expressions(source)
    assert parse_expressions(to_source(statements)) == statements
    for statement in statements:
        assert parse_expressions(to_source(statement)) == [statement]


def test_printed_text():
    assert to_source(one(DOT)) == DOT
    assert to_source(one(CONCAT)) == CONCAT
    assert to_source(one(PAD)) == PAD
    assert to_source(one(CAST_QUOTED)) == "output0[B, N] = input0[B, N].cast(`float16`)"
    assert to_source(one("o[N] = ((a[N]) - (b[N] - c[N]))")) == "o[N] = a[N] - (b[N] - c[N])"
    assert to_source(Binary("*", Binary("+", N, Number(1)), Number(-2))) == "(N + 1) * -2"
    assert to_source(parse_expressions(SCALARS)) == (
        "output0[0] +=! input0[N]; output1[] = output0[0] * -0.5")


def _random_expr(rng: random.Random, depth: int):
    """A random expression in the form the parser produces (no negated literals)."""
    if depth == 0:
        return rng.choice([
            Index(rng.choice("ABKN")),
            Number(rng.choice([0, 3, -7, 0.5, -1e-5, 2.0])),
            Const(rng.choice([1, -0.5])),
            ref("input0", Index("N")),
        ])
    pick = rng.randrange(6)
    sub = lambda: _random_expr(rng, depth - 1)  # noqa: E731
    if pick == 0:
        op = rng.choice(["+", "-", "*", "/", "//", "%", "==", "!=", "<", "<=", ">", ">=", "&", "|"])
        return Binary(op, sub(), sub())
    if pick == 1:
        operand = sub()
        return operand if isinstance(operand, Number) else Unary("-", operand)
    if pick == 2:
        return ref("input1", *(sub() for _ in range(rng.randrange(3))))
    if pick == 3:
        return Call(sub(), "call", rng.choice(["exp", "max"]),
                    tuple(sub() for _ in range(rng.randrange(3))))
    if pick == 4:
        return Call(sub(), "cast", "float32")
    conditions = tuple(sub() for _ in range(rng.randrange(1, 3)))
    return Call(sub(), "when", rng.choice([None, "any"]), (*conditions, sub()))


def test_round_trip_of_random_trees():
    rng = random.Random(6)
    for _ in range(300):
        statement = Statement(ref("output0", Index("N")), rng.choice(["=", "+=!", ">=!"]),
                              _random_expr(rng, rng.randrange(1, 5)))
        assert parse_expressions(to_source(statement)) == [statement], to_source(statement)


def test_to_source_refuses_what_text_cannot_hold():
    with pytest.raises(ValueError, match="no literal"):
        to_source(Number(float("inf")))
    with pytest.raises(ValueError, match="';'"):
        to_source(Statement(ref("o", N), "=", ref("i", N), annotation="a; b"))


# ---------------------------------------------------------------------- infix gather

# The two forms of the published Elk dumps, and the nested form each stands for.
EMBEDDING = "output0[N0, N1, N2] = input0[G3, N2] g input1[N0, N1]"
EMBEDDING_NESTED = "output0[N0, N1, N2] = input0[input1[N0, N1], N2]"
LENGTH_ONE = "output0[N0, N1] = input0[N0, G3, N1] g input1[N2]"
LENGTH_ONE_NESTED = "output0[N0, N1] = input0[N0, input1[N2], N1]"


def test_infix_gather_of_an_embedding_lookup_is_the_nested_form():
    s = one(EMBEDDING)
    N0, N1, N2 = Index("N0"), Index("N1"), Index("N2")
    assert s.rhs == ref("input0", ref("input1", N0, N1), N2)
    assert parse_expressions(EMBEDDING) == parse_expressions(EMBEDDING_NESTED)
    assert [t.name for t in tensors(s.rhs)] == ["input0", "input1"]
    assert reduced_indices(s) == []


def test_infix_gather_with_a_length_one_index_tensor():
    s = one(LENGTH_ONE)
    assert s.rhs == ref("input0", Index("N0"), ref("input1", Index("N2")), Index("N1"))
    assert parse_expressions(LENGTH_ONE) == parse_expressions(LENGTH_ONE_NESTED)
    assert reduced_indices(s) == ["N2"]


def test_infix_gather_axis_is_found_by_use_not_by_name():
    # Any name used only on the gathered axis qualifies; one starting with G need not.
    assert one("o[N, F] = e[X, F] g t[N]") == one("o[N, F] = e[t[N], F]")
    assert one("o[N, G] = e[Q, G] g t[N]") == one("o[N, G] = e[t[N], G]")
    # Methods after the gather apply to the gathered value.
    assert one("o[N, F] = e[X, F] g t[N].cast(`float32`) + 1") == one(
        "o[N, F] = e[t[N], F].cast(`float32`) + 1")
    # Several gathers in one statement, each with its own fresh name.
    assert one("o[N] = a[G1] g i[N] * b[G2] g j[N] where N in 4") == one(
        "o[N] = a[i[N]] * b[j[N]] where N in 4")


def test_g_is_an_ordinary_index_name_elsewhere():
    g = Index("g")
    s = one("output0[g] = input0[g, N] * g where g in 4")
    assert s == Statement(ref("output0", g), "=", Binary("*", ref("input0", g, N), g), {"g": 4})
    assert one("o[N] = input0[g]").rhs == ref("input0", g)
    assert one("o[N] = g[N]").rhs == ref("g", N)  # a tensor called g
    assert one("o[N] = g[G] g g[N]").rhs == ref("g", ref("g", N))


@pytest.mark.parametrize("source", [EMBEDDING, LENGTH_ONE])
def test_infix_gather_round_trips_through_the_nested_form(source):
    statements = parse_expressions(source)
    text = to_source(statements)
    assert text == {EMBEDDING: EMBEDDING_NESTED, LENGTH_ONE: LENGTH_ONE_NESTED}[source]
    assert " g " not in text
    assert parse_expressions(text) == statements


@pytest.mark.parametrize("source, at, expected, found", [
    # 'g' not followed by a tensor reference
    ("output0[N0] = input0[G3] g K", "K", "a tensor reference after 'g'", "'K'"),
    ("output0[N0] = input0[G3] g (input1[N0])", "(", "a tensor reference after 'g'", "'('"),
    ("output0[N0] = input0[G3] g", None, "a tensor reference after 'g'", "end of input"),
    # no candidate for the gathered axis: every index is used elsewhere
    ("output0[N0, N1] = input0[N0, N1] g input1[N0]", "input0",
     "exactly one index of input0[N0, N1] used nowhere else in the statement", "none"),
    ("output0[N0] = input0[G3] g input1[N0] where G3 in 4", "input0",
     "exactly one index of input0[G3] used nowhere else", "none"),
    ("output0[N0] = input0[G3] g input1[N0] + input2[G3]", "input0",
     "exactly one index of input0[G3] used nowhere else", "none"),
    # more than one candidate
    ("output0[N0] = input0[G3, G4] g input1[N0]", "input0",
     "exactly one index of input0[G3, G4] used nowhere else", "G3 and G4"),
    ("output0[N0] = input0[A, B, C] g input1[N0]", "input0",
     "exactly one index of input0[A, B, C] used nowhere else", "A, B and C"),
    # 'g' after something that is not a tensor reference
    ("output0[N0] = N0 g input1[N0]", "N0 g",
     "a tensor reference such as input0[G, N] before 'g'", "'N0'"),
    ("output0[N0] = (input0[G3]) g input1[N0]", "(",
     "a tensor reference such as input0[G, N] before 'g'", "'(input0[G3])'"),
    ("output0[N0] = input0[G3].cast(`int32`) g input1[N0]", "input0",
     "a tensor reference such as input0[G, N] before 'g'", "'input0[G3].cast(`int32`)'"),
    ("output0[N0] = input0[G3] g input1[G4] g input2[N0]", "input0",
     "a tensor reference such as input0[G, N] before 'g'", "'input0[G3] g input1[G4]'"),
])
def test_infix_gather_errors(source, at, expected, found):
    """`at` is the first occurrence of the text the error points at (None: the end)."""
    error = _error(source)
    column = len(source) if at is None else source.index(at)
    assert error.position == error.column == column
    assert error.expected.startswith(expected)
    assert error.found == found
    assert str(error).startswith(f"expected {error.expected} at column {column}, found {found}")


def test_infix_gather_error_names_the_axis_rule_and_underlines_the_table():
    source = "output0[N0] = input0[G3, G4] g input1[N0]"
    lines = str(_error(source)).splitlines()
    assert lines[0] == (
        "expected exactly one index of input0[G3, G4] used nowhere else in the statement"
        " (the axis that 'g' gathers) at column 14, found G3 and G4")
    assert lines[2] == "    " + " " * 14 + "^" * len("input0[G3, G4]")


# ------------------------------------------------------------------------- node text

# One entry of a JSON graph dump, as the file holds it.
DUMP_LINE = (
    r'''[ 12, " - einstein_v2(\" output0[B, N] +=! input0[B, K] * input1[K, N] ; \", '''
    r'''input_dict={ \"input0\" : { \"dtype\" : \"float16\", \"shape\" : [32, 4096]} , '''
    r'''\"input1\" : { \"dtype\" : \"float16\", \"shape\" : [4096, 11008]} }) ", '''
    r'''"Dot", [[3, 0], [7, 0]] ]'''
)


def test_node_text_of_a_dump_entry():
    node = parse_node_text(json.loads(DUMP_LINE)[1])
    assert node.source.strip() == "output0[B, N] +=! input0[B, K] * input1[K, N] ;"
    assert node.input_dict == {
        "input0": {"dtype": "float16", "shape": [32, 4096]},
        "input1": {"dtype": "float16", "shape": [4096, 11008]},
    }
    assert node.ignored == ()
    assert node.statements() == [one(DOT)]


def test_node_text_with_empty_input_dict_and_extra_arguments():
    node = parse_node_text(
        ' - einstein_v2("output0[N] = const(0.0).cast(`float16`) where N in 8", input_dict={}) ')
    assert node.input_dict == {} and node.statements()[0].bounds == {"N": 8}
    node = parse_node_text(
        '- einstein_v2(" output0[N] = input0[N].cast(\\"float32\\") ## @: memcpy ", '
        'input_dict={"input0": {"dtype": "float16", "shape": [8]}}, '
        'extra_outputs=["output0", "output1"], unknown=(1, {"a": "),"}))')
    assert node.source == ' output0[N] = input0[N].cast("float32") ## @: memcpy '
    assert node.ignored == ("extra_outputs", "unknown")
    assert node.statements()[0].annotation == "memcpy"
    # Positional dictionary, Python-style quotes, and an empty call.
    node = parse_node_text("einstein_v2('o[N] = i[N]', {'i': {'dtype': 'int32', 'shape': [4]}})")
    assert node.input_dict == {"i": {"dtype": "int32", "shape": [4]}}
    empty = parse_node_text(' - einstein_v2("", input_dict={}) ')
    assert empty == parse_node_text("- einstein_v2()")
    assert parse_node_text("- einstein_v2()").statements() == []


def test_node_text_with_an_annotation_after_the_call():
    # The published graphs annotate their re-layouts after the call, not in the string.
    text = (' - einstein_v2(" output0[N0, N1, N2] = input0[N0, N1] where N2 in 1;  ", '
            'input_dict={ "input0" : { "dtype" : "float32", "shape" : [99, 66]} }) ## @: memcpy ')
    node = parse_node_text(text)
    assert node.annotation == "memcpy" and node.input_dict["input0"]["shape"] == [99, 66]
    assert node.statements()[0].bounds == {"N2": 1}
    assert parse_node_text(' - einstein_v2("o[N] = i[N]") ## fused ').annotation == "fused"
    assert parse_node_text(' - einstein_v2("o[N] = i[N]")  ').annotation is None


@pytest.mark.parametrize("text, expected, found", [
    ("- einsum(\"o[N] = i[N]\")", "'einstein_v2('", "'e'"),
    ('- einstein_v2("o[N] = i[N]", input_dict={"i": {"dtype": "float16", "shape": [4]}',
     "'}' to close the '{' at column 40", "end of input"),
    ('- einstein_v2("o[N] = i[N]", input_dict={"i": {"dtype": "float16", "shape": ["S"]}})',
     "for input 'i'", "{'dtype': 'float16', 'shape': ['S']}"),
    ('- einstein_v2("o[N] = i[N]", input_dict={"i": {"dtype": "int8", "shape": []} "j": {}})',
     "a JSON object for input_dict (Expecting ',' delimiter)", "'\"'"),
    ('- einstein_v2("o[N] = i[N]) ', "a closing \" for the string opened here", "end of text"),
    ('- einstein_v2("o[N] = i[N]" input_dict={})', "',' or ')' after an argument", "'i'"),
    ('- einstein_v2("o[N] = i[N]") memcpy', "'## <annotation>' or the end of the node text", "'m'"),
])
def test_node_text_errors(text, expected, found):
    with pytest.raises(EinsteinSyntaxError) as info:
        parse_node_text(text)
    assert expected in info.value.expected
    assert info.value.found == found
    assert info.value.source == text


# ----------------------------------------------------------------------------- errors


def _error(source: str) -> EinsteinSyntaxError:
    with pytest.raises(EinsteinSyntaxError) as info:
        parse_expressions(source)
    assert info.value.source == source
    return info.value


def test_error_unbalanced_bracket():
    source = "output0[B, N] +=! input0[B, K ; "
    error = _error(source)
    column = source.index(";")
    assert error.position == column
    assert error.expected == "']' to close the index list of input0"
    assert str(error).splitlines() == [
        f"expected ']' to close the index list of input0 at column {column}, found ';'",
        f"    {source}",
        "    " + " " * column + "^",
    ]
    error = _error("output0[N] = (input0[N] + 1")
    assert error.expected == "')' to close the parenthesis opened at column 13"
    assert error.found == "end of input" and error.position == 27


def test_error_unknown_operator():
    error = _error("output0[N] = input0[N] ^ input1[N]")
    assert (error.position, error.found) == (23, "'^'")
    assert "an operator" in error.expected
    assert str(error).startswith(
        "expected an operator, 'where', '##', ';' or end of input at column 23")
    error = _error("output0[N] *= input0[N]")
    assert error.position == 11 and "assignment operator" in error.expected
    error = _error("output0[N] = input0[N].foo()")
    assert (error.position, error.found) == (23, "'foo'")
    assert error.expected == "a method name (call, cast, when or dtype) after '.'"


def test_error_missing_assignment():
    error = _error("output0[N] input0[N]")
    assert error.position == 11
    assert error.found == "'input0'"
    assert error.expected == "an assignment operator ('=', '+=!', '>=!' or '<=!') after output0[N]"
    assert str(error).splitlines()[-1] == "    " + " " * 11 + "^^^^^^"
    error = _error("= input0[N]")
    assert error.position == 0 and "output tensor" in error.expected


@pytest.mark.parametrize("source, lexeme", [
    ("output0[N] = input0[N] * 1e+", "1e+"),
    ("output0[N] = input0[N] * 1.5.2", "1.5.2"),
    ("output0[N] = input0[N] * 3x", "3x"),
])
def test_error_bad_number(source, lexeme):
    error = _error(source)
    assert error.position == 25
    assert error.found == repr(lexeme)
    assert error.expected == "a number such as 1, 2.5 or 1e-5"
    assert "at column 25" in str(error)


def test_other_errors():
    assert "integer extent" in _error("o[N] = i[N] where N in 2.5").expected
    assert _error("o[N] = i[N] where N in 4, N in 5").expected.startswith("an index not bounded")
    assert _error("o[N] = i[N] where N 4").expected == "'in' after N in the where clause"
    assert _error("o[N] = i[N].when(N < 4)").expected.startswith("',' and the value")
    assert _error("o[N] = i[N].call(exp)").expected.startswith("a function name")
    assert _error("o[N] = i[N].call(`max`, i[N])").expected.startswith("'[' to open")
    assert _error("o[N] = i[N].cast(`float16)").found == "end of input"
    assert _error("o[N] = i[N] o[N] = i[N]").expected.startswith("an operator")
    assert _error("## @: memcpy").expected == "a statement before the annotation"
    error = _error("o[N] = i[N]\n    + j[N, ]")
    assert (error.line, error.column, error.position) == (2, 11, 23)
    assert "at line 2 column 11" in str(error)
    assert isinstance(error, ValueError)


def test_error_survives_pickling():
    error = _error("o[N] = i[N")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.expected, copy.position, copy.source, copy.found) == (
        error.expected, error.position, error.source, error.found)
    assert str(copy) == str(error)


def test_a_cast_to_another_values_type_round_trips():
    source = "output0[N0] = input0[N0].call(`max`, [const(0).cast(input0[N0].dtype())])"
    [statement] = parse_expressions(source)
    cast = statement.rhs.args[0]
    assert (cast.method, cast.name, cast.args[0].method) == ("cast", None, "dtype")
    assert to_source(statement) == source
    with pytest.raises(EinsteinSyntaxError, match=r"or a value's .dtype\(\) at column 40"):
        parse_expressions("output0[N0] = input0[N0].cast(input1[N0])")
