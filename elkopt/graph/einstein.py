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
grammar rule below, the five binary-operator levels sharing one); errors raise
`EinsteinSyntaxError`, which names the position, what was expected and what was found.

This module is the public face; the code lives in `einstein_ast` (the error, the tree,
its helpers and `to_source`), `einstein_parser` (tokenizer, parser, `parse_expressions`)
and `einstein_node` (`parse_node_text`, `NodeText`).

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
                | gather
                | tensor_ref
                | NAME                        (* an index variable *)
                | "(" expr ")" ;
    gather      = tensor_ref "g" tensor_ref ;  (* read as the nested form, see below *)
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
* ``input0[G3, N2] g input1[N0, N1]`` is the infix gather of the published Elk dumps
  (made by a text substitution from the nested form): it is read as
  ``input0[input1[N0, N1], N2]``, and ``input0[N0, G3, N1] g input1[N2]`` as
  ``input0[N0, input1[N2], N1]``. The gathered axis of the first tensor is the one whose
  index is a bare name used nowhere else in the statement (not on the output, in the
  second tensor, elsewhere on the right-hand side nor in the where clause); exactly one
  axis must qualify. The parser returns the nested form, so neither the tree nor
  `to_source` shows ``g``. ``g`` is a keyword only right after a tensor reference; it is
  an ordinary index name elsewhere (``input0[g]``). Methods after a gather apply to the
  gathered value.
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
minus, method calls, ``g``. All binary operators associate to the left. ``&`` and ``|``
bind more loosely than comparisons (they join conditions: ``A < 4 & B > 0``), unlike
Python.
A minus sign in front of a number makes a negative number (``-0.5`` is `Number(-0.5)`,
not a `Unary`), so the tree holds no negated literals.

Example::

    >>> [s] = parse_expressions("output0[B, N] +=! input0[B, K] * input1[K, N]")
    >>> s.reduction, reduced_indices(s), [t.name for t in tensors(s.rhs)]
    ('sum', ['K'], ['input0', 'input1'])
"""

from elkopt.graph.einstein_ast import (
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
    functions,
    index_names,
    is_affine,
    reduced_indices,
    tensors,
    to_source,
    walk,
)
from elkopt.graph.einstein_node import NodeText, parse_node_text
from elkopt.graph.einstein_parser import parse_expressions

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
