"""How an ``Expand`` broadcast reaches its readers, for `elkopt.graph.onnx_graph`.

A view lists, per axis of a value, the factors of its length that are read from the tensor
and those broadcast; reshapes regroup the factors, so HF's ``repeat_kv`` (expand, then
merge the group axis into the heads) still reads the cache once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: How a value's axes lie on its tensor once broadcast by an Expand: per axis, major first,
#: factors (length, read) whose lengths multiply to the axis length; a factor not read is
#: broadcast (a new or size-1 axis of the Expand's input). Factors have length > 1.
_View = tuple[tuple[tuple[int, bool], ...], ...]


def _plain(shape: Sequence[int]) -> _View:
    """The view of a tensor read at its own shape."""
    return tuple(((n, True),) if n > 1 else () for n in shape)


def _merged(factors: Sequence[tuple[int, bool]]) -> tuple[tuple[int, bool], ...]:
    """Adjacent factors both read or both broadcast as one."""
    axis: list[tuple[int, bool]] = []
    for length, read in factors:
        if axis and axis[-1][1] == read:
            axis[-1] = (axis[-1][0] * length, read)
        else:
            axis.append((length, read))
    return tuple(axis)


def _broadcast_view(view: _View) -> _View | None:
    """`view` if some factor is broadcast, else None (the value reads its tensor plainly)."""
    return view if any(not read for axis in view for _, read in axis) else None


def _expanded(view: _View, shape: Sequence[int]) -> _View:
    """`view` expanded to `shape` (numpy broadcasting, aligned right)."""
    offset = len(shape) - len(view)
    axes = [() if n == 1 else ((n, False),) for n in shape[:offset]]
    for factors, n in zip(view, shape[offset:]):
        axes.append(factors if math.prod(f for f, _ in factors) == n else ((n, False),))
    return tuple(axes)


def _regrouped(view: _View, shape: Sequence[int]) -> _View | None:
    """`view` reshaped (row-major) to `shape`, splitting factors where an axis ends inside one;
    None if a factor does not divide evenly (the reshape then reads the tensor plainly)."""
    factors = [f for axis in view for f in axis]
    axes = []
    for n in shape:
        axis = []
        while n > 1:
            if not factors:
                return None
            length, read = factors.pop(0)
            if n % length == 0:
                axis.append((length, read))
                n //= length
            elif length % n == 0:  # the axis ends inside this factor: its major part
                axis.append((n, read))
                factors.insert(0, (length // n, read))
                n = 1
            else:
                return None
        axes.append(_merged(axis))
    return None if factors else tuple(axes)
