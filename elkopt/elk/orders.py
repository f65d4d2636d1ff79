"""The published preload-order candidates of Elk-Full (ELK_REFERENCE 5.5).

1. Layer detection: with `approx = n // layers`, the first `offset` for which the rest of
   the first `approx` operators reappears (by table key) at some shift `s <= offset` in the
   next `approx` operators; the layer is `approx - offset + s` operators long.
2. The first layer is cut into groups, each ending with a matmul or conv; trailing small
   operators join the last group. A group's type is its big operator's type name and size.
3. Group permutations where no group moves by more than `max_shift` positions, generated
   depth first with the published pruning (a branch is cut when its current sequence of
   group types already ended a permutation), one per distinct type sequence.
4. Each permutation is applied to every layer; the operators before the first layer and
   after the last keep their places.

Where the published code would crash (one layer, no repetition, no big operator) only the
identity order is returned. The published list comes out of a Python set (its order
depends on PYTHONHASHSEED, quirk 8); here it is the depth-first order, identity first.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Hashable, Sequence

from elkopt.elk.coldhot import ElkOp

#: Op type ids of the operators that end a group (conv, matmul).
BIG_OP_TYPES = (4, 5)
#: The published MAX_EDIT_DIST (3 in training).
MAX_SHIFT = 4


@dataclass(frozen=True)
class LayerGroups:
    """The repeated layer: it starts at `offset`, is `length` operators long and repeats
    `layers` times; `groups` are the first layer's operator indices, `types` their type ids."""

    offset: int
    length: int
    layers: int
    groups: tuple[tuple[int, ...], ...]
    types: tuple[int, ...]


def detect_layer(keys: Sequence[Hashable], layers: int) -> tuple[int, int]:
    """(offset, length) of the repeated layer, as the published search finds it."""
    approx = len(keys) // layers
    first, second = list(keys[:approx]), list(keys[approx:2 * approx])
    offset = shift = approx - 1  # what the published loops leave when nothing matches
    for off in range(approx):
        tail = first[off:]
        hit = next((s for s in range(off + 1) if second[s:s + len(tail)] == tail), None)
        if hit is not None:
            offset, shift = off, hit
            break
    return offset, approx - offset + shift


def find_layer_groups(ops: Sequence[ElkOp], layers: int) -> LayerGroups | None:
    """The published layer and its groups; None where the published code would fail."""
    n = len(ops)
    if layers < 2 or n // layers < 1:
        return None
    keys = [op.key for op in ops]
    offset, length = detect_layer(keys, layers)
    if offset + layers * length > n:
        offset = 0
        if layers * length > n:
            return None
    # a group type names the big op by its table's first operator (type name) and size
    first_name: dict[Hashable, str] = {}
    for op in ops:
        first_name.setdefault(op.key, op.name)
    groups: list[list[int]] = []
    types: list[int] = []
    type_ids: dict[str, int] = {}
    start = 0
    for q in range(length):
        op = ops[offset + q]
        if op.op_type in BIG_OP_TYPES:
            parts = first_name[op.key].split("_")
            label = "_".join([parts[0], parts[2]] if len(parts) > 2 else parts)
            label += "_" + str(prod(d for d in op.dims if d != 0))
            types.append(type_ids.setdefault(label, len(type_ids)))
            groups.append(list(range(offset + start, offset + q + 1)))
            start = q + 1
        elif q == length - 1:
            if not groups:
                return None
            groups[-1].extend(range(offset + start, offset + q + 1))
    if not groups:
        return None
    return LayerGroups(offset, length, layers, tuple(map(tuple, groups)), tuple(types))


def reduced_permutations(types: Sequence[int],
                         max_shift: int = MAX_SHIFT) -> list[tuple[int, ...]]:
    """Group permutations (as index tuples) found by the published pruned search."""
    data, perm = list(types), list(range(len(types)))
    n = len(perm)
    ended: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []

    def visit(level: int) -> None:
        if level == n:
            ended.add(tuple(data))
            out.append(tuple(perm))
            return
        for i in range(level, n):
            perm[level], perm[i] = perm[i], perm[level]
            data[level], data[i] = data[i], data[level]
            if (tuple(data) not in ended and abs(perm[i] - i) <= max_shift
                    and abs(perm[level] - level) <= max_shift):
                visit(level + 1)
            perm[level], perm[i] = perm[i], perm[level]
            data[level], data[i] = data[i], data[level]

    visit(0)
    return out


def preload_orders(ops: Sequence[ElkOp], layers: int,
                   max_shift: int = MAX_SHIFT) -> list[tuple[int, ...]]:
    """Every candidate preload order (a permutation of operator indices), identity first."""
    n = len(ops)
    found = find_layer_groups(ops, layers)
    if found is None:
        return [tuple(range(n))]
    orders = []
    for perm in reduced_permutations(found.types, max_shift):
        flat = [i for g in perm for i in found.groups[g]]
        order = list(range(found.offset))
        for layer in range(layers):
            order += [i + layer * found.length for i in flat]
        orders.append(tuple(order + list(range(len(order), n))))
    return orders
