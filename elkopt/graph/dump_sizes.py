"""The sizes a dump's placeholders stand for, and how a prefill graph becomes a decode step.

The published graphs write their sizes symbolically: 99 for the batch, 66 for the
sequence, and products such as 99 x 66 or 40 x 99 (`Placeholders`). Their LLM graphs
are prefill graphs: every activation carries the sequence, and the attention reads this
step's own keys and values. `PrefillDecode` says how one decode step is made of them, the
published parser's rule: the new token is 1, and the attention BatchMatMuls read a KV
cache of `kv_len` positions from HBM.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: The published graphs' size placeholders: 99 stands for the batch, 66 for the sequence
#: length (in a decode step made from a prefill graph: 1 token, and the KV length in the
#: attention).
BATCH_PLACEHOLDER = 99
SEQUENCE_PLACEHOLDER = 66

#: How the scores of a decode step made from a prefill graph are sized:
#: published: as the published parser, only the two attention BatchMatMuls see the KV
#: length; the scale, mask and softmax between them are sized [B, H, 1, 1];
#: exact: the KV length follows the scores through those operators ([B, H, 1, KV]), as in
#: a real decode step.
DECODE_RULES = ("published", "exact")


class Placeholders:
    """Substitutes symbolic sizes in a dump: `values` maps a placeholder to its size.

    A length that is a placeholder, or a product of placeholders and a constant
    (99 x 66, 40 x 99), becomes that product with each placeholder replaced by its value.
    A length that factors in more than one way takes the factorisation leaving the
    smallest constant: 3960 is 40 x 99 (40 heads times the batch), not 60 x 66. A
    placeholder mapped to itself is left alone. `used` collects the placeholders met.
    """

    def __init__(self, values: Mapping[int, int] | None = None) -> None:
        self.values = dict(values or {})
        self.used: set[int] = set()
        for placeholder, value in self.values.items():
            if not (isinstance(placeholder, int) and placeholder > 1):
                raise ValueError(f"a placeholder is a size above 1 that stands for another, got {placeholder!r}")
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"placeholder {placeholder} must stand for a positive int, got {value!r}")

    def __call__(self, length: int) -> int:
        """The size `length` stands for."""
        factors = self.factors(length)
        self.used.update(factors)
        return length // math.prod(factors) * math.prod(self.values[p] for p in factors)

    def factors(self, length: int) -> list[int]:
        """The placeholders `length` is a product of (with repeats), in the factorisation
        leaving the smallest constant; empty for a plain size."""
        best: tuple[int, list[int]] = (length, [])
        if length < 2:
            return []
        for factors in self._factorisations(length, sorted(self.values)):
            leftover = length // math.prod(factors)
            if leftover < best[0]:
                best = (leftover, factors)
        return best[1]

    def _factorisations(self, length: int, placeholders: list[int]) -> Iterator[list[int]]:
        """Every multiset of placeholders whose product divides `length`."""
        if not placeholders:
            yield []
            return
        first, rest = placeholders[0], placeholders[1:]
        power: list[int] = []
        while True:
            for tail in self._factorisations(length // math.prod(power, start=1), rest):
                yield power + tail
            if length % (math.prod(power, start=1) * first):
                return
            power = power + [first]


@dataclass(frozen=True)
class PrefillDecode:
    """Read a prefill-shaped dump as one decode step with a KV cache of `kv_len` positions.

    It applies to a prefill dump: one with no KV cache input (no BatchMatMul reads its
    second operand from outside the graph), or whose attention has a sequence of queries
    (the published prefill_kv.json). Every sequence placeholder becomes 1 token, except in the
    attention BatchMatMuls, where the dims indexing the second operand (the keys of
    q x K^T, the values of P x V) become `kv_len` and that operand becomes a KV cache read
    from HBM; the embedding gathers are dropped (their output is the step's input). `rule`
    is one of `DECODE_RULES`.
    """

    kv_len: int
    rule: str = "published"

    def __post_init__(self) -> None:
        if not (isinstance(self.kv_len, int) and self.kv_len > 0):
            raise ValueError(f"kv_len must be a positive int, got {self.kv_len!r}")
        if self.rule not in DECODE_RULES:
            raise ValueError(f"the decode rule must be one of {', '.join(DECODE_RULES)}, got {self.rule!r}")
