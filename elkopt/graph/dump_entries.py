"""The nodes of an einstein dump as listed, and what each edge names.

A dump is a JSON list of ``[id, text, type, [[producer_id, port], ...]]``. The published
graphs are not tidy: most leave out their ``Parameter`` and ``Constant`` nodes, some list
an id more than once (whole layers pasted again) and one uses an id before the entry that
defines it. `link_entries` resolves every edge the way the published parser walks the
list:

- an edge names the latest entry with that id listed before the reader;
- an id with no entry at all is an input from outside the graph (a weight, or the step's
  input);
- an id listed only after the reader is accepted when that entry is data movement over
  inputs from outside the graph (a transposed weight), and refused otherwise;
- an edge from a node to itself is refused.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

#: Source nodes: tensors that come from outside the graph.
SOURCE_TYPES = frozenset({"Constant", "Parameter"})
#: Data movement, folded into the nodes that read it.
FOLDED_TYPES = frozenset({"Reshape", "Broadcast", "Convert", "Result", "Concat"})


class DumpError(ValueError):
    """A node of a dump that cannot be read, naming the node and what was expected."""


@dataclass(frozen=True)
class Entry:
    """One listed node: its place in the list, id, text, type and producer ids (one per
    edge, in input order)."""

    position: int
    id: int
    text: str
    type: str
    sources: tuple[int, ...]
    repeated: bool = False  # an earlier entry has the same id

    @property
    def where(self) -> str:
        """How messages name the node (a repeated id also gives its place in the list)."""
        at = f", entry {self.position}" if self.repeated else ""
        return f"node {self.id} ({self.type}{at})"

    @property
    def is_source(self) -> bool:
        return self.type in SOURCE_TYPES

    @property
    def is_folded(self) -> bool:
        return self.type in FOLDED_TYPES

    @property
    def source_name(self) -> str | None:
        """The name a source node gives its tensor (`` - Parameter x `` names x), or None
        for a bare one, as in the published graphs."""
        words = self.text.replace("-", " ", 1).split()
        if words and words[0] == self.type:
            words = words[1:]
        return " ".join(words) or None


@dataclass(frozen=True)
class Link:
    """What one edge names: the entry at `position`, or (position None) node `id`, which
    the dump does not list: an input from outside the graph."""

    id: int
    position: int | None

    @property
    def outside(self) -> bool:
        return self.position is None


@dataclass
class Linked:
    """A dump's entries with every edge resolved (`links[p][k]`: edge k of entry p)."""

    entries: list[Entry]
    links: list[tuple[Link, ...]]
    missing: set[int]  # ids that edges name but no entry has
    forward: list[tuple[Entry, int, Entry]]  # (reader, edge, entry listed after it)

    @property
    def repeated_ids(self) -> int:
        """Ids listed more than once."""
        return len({e.id for e in self.entries if e.repeated})

    @property
    def repeated_entries(self) -> int:
        """Entries whose id an earlier entry has."""
        return sum(e.repeated for e in self.entries)


def read_entries(nodes: Any) -> list[Entry]:
    """The entries of a dump's node list; DumpError for what is not a node."""
    if not isinstance(nodes, list):
        raise DumpError(f"a dump is a JSON list of nodes, got {type(nodes).__name__}")
    seen: set[int] = set()
    entries = []
    for position, node in enumerate(nodes):
        entry = _entry(node, position)
        if entry.id in seen:
            entry = replace(entry, repeated=True)
        seen.add(entry.id)
        entries.append(entry)
    return entries


def _entry(node: Any, position: int) -> Entry:
    if not (isinstance(node, list) and len(node) == 4 and _is_int(node[0])
            and isinstance(node[1], str) and isinstance(node[2], str) and isinstance(node[3], list)):
        raise DumpError(f"entry {position}: a node is [id, text, type, [[producer, port], ...]], "
                        f"got {str(node)[:120]}")
    entry = Entry(position, node[0], node[1], node[2], ())
    for k, edge in enumerate(node[3]):
        if not (isinstance(edge, list) and len(edge) == 2 and all(_is_int(v) for v in edge)):
            raise DumpError(f"{entry.where}: edge {k} must be [producer_id, port], got {edge!r}")
        if edge[1] != 0:
            raise DumpError(f"{entry.where}: edge {k} reads output {edge[1]} of node {edge[0]}; "
                            "expected output 0 (nodes with several outputs are not imported)")
    return replace(entry, sources=tuple(edge[0] for edge in node[3]))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def link_entries(entries: list[Entry]) -> Linked:
    """Resolve every edge (see the module doc); DumpError for an edge to the node itself or
    to an operator listed after its reader."""
    positions: dict[int, list[int]] = defaultdict(list)
    for entry in entries:
        positions[entry.id].append(entry.position)
    links: list[tuple[Link, ...]] = []
    missing: set[int] = set()
    forward: list[tuple[Entry, int, Entry]] = []
    for entry in entries:
        row = []
        for k, source in enumerate(entry.sources):
            listed = positions.get(source)
            if not listed:
                missing.add(source)
                row.append(Link(source, None))
                continue
            before = bisect.bisect_left(listed, entry.position)
            if before:
                row.append(Link(source, listed[before - 1]))
                continue
            if source == entry.id:
                raise DumpError(f"{entry.where}: input {k} comes from the node itself; an edge names "
                                "the node that produces the input")
            later = entries[listed[0]]
            forward.append((entry, k, later))
            row.append(Link(source, later.position))
        links.append(tuple(row))
    linked = Linked(entries, links, missing, forward)
    for reader, k, later in forward:
        if not _from_outside(linked, later.position, set()):
            raise DumpError(
                f"{reader.where}: input {k} comes from {later.where}, which is listed after it "
                f"(entry {later.position}, the reader is entry {reader.position}) and computes its "
                "output; a dump lists an operator before the nodes that read it")
    return linked


def _from_outside(linked: Linked, position: int, visiting: set[int]) -> bool:
    """Whether the entry at `position` is a source node, or data movement over inputs that
    all come from outside the graph (so it can be read before it is listed)."""
    entry = linked.entries[position]
    if entry.is_source:
        return True
    if not entry.is_folded or position in visiting:
        return False
    visiting.add(position)
    return all(link.outside or _from_outside(linked, link.position, visiting)
               for link in linked.links[position])


_NODE_START = re.compile(r"\[\s*(-?\d+)\s*,\s*\"")


def describe_json_error(text: str, position: int) -> str:
    """Where a JSON error at `position` of a dump's text is: the node being read (the last
    ``[id, "`` opened before it), or the start of the list."""
    starts = list(_NODE_START.finditer(text, 0, position + 1))
    if not starts:
        return "before the first node"
    return f"in the entry of node {starts[-1].group(1)} (the last one that starts before it)"
