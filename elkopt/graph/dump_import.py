"""Einstein-dump nodes to operators (the rules are in `elkopt.graph.dump`'s module doc).

`import_dump` walks the linked entries in order. Data-movement nodes become `View`s of
the tensor they move (which of its axes each of their axes holds, so that a Broadcast's
new axes are not read), source nodes and missing producers become tensors from outside
the graph, and every statement of the other nodes becomes an operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from elkopt.conventions import Conventions
from elkopt.graph import einstein as ein
from elkopt.graph.dump_entries import DumpError, Entry, Link, Linked, link_entries, read_entries
from elkopt.graph.dump_sizes import BATCH_PLACEHOLDER, SEQUENCE_PLACEHOLDER, Placeholders, PrefillDecode
from elkopt.graph.ir import BINARY_SYMBOLS, Dim, Graph, Operand, Operator, OpKind, Storage

#: What a tensor from outside the graph is (`ImportNotes.outside`).
WEIGHT, KV_CACHE, STEP_INPUT, CONSTANT = "weights", "kv_caches", "step_inputs", "constants"
_ON_CHIP = (STEP_INPUT, CONSTANT)
#: The axis a Reshape adds (length 1): it holds no axis of the tensor but is read.
ADDED = frozenset({-1})


@dataclass(frozen=True)
class View:
    """A node's output as its readers see it: `tensor`, and for each axis the set of the
    tensor's axes it holds (empty for an axis a Broadcast added; ADDED for a length-1 axis a
    Reshape added, which is read); None: every axis is the tensor's own, in order. `via`
    names the Concat the tensor is read through, if any (for the published adjacency rule,
    a Concat's output is a tensor of its own)."""

    tensor: str
    axes: tuple[frozenset[int], ...] | None = None
    via: str | None = None

    @property
    def identity(self) -> str:
        """The tensor as the published parser names it: the Concat it comes through, else itself."""
        return self.via or self.tensor

    def holds(self, rank: int) -> tuple[frozenset[int], ...]:
        return self.axes if self.axes is not None else tuple(frozenset({j}) for j in range(rank))


@dataclass(frozen=True)
class _Input:
    """An input of a node's statements: its view and its shape as written."""

    view: View
    shape: tuple[int, ...]


@dataclass
class ImportNotes:
    """What reading a dump resolved, for the run's summary and metrics.json."""

    nodes: int = 0  # entries listed
    operators: int = 0
    folded: int = 0  # data-movement nodes folded into their readers
    outside: dict[str, int] = field(default_factory=dict)  # inputs from outside the graph, by kind
    missing_nodes: int = 0  # producer ids that no entry has
    repeated_ids: int = 0
    repeated_entries: int = 0
    forward_references: int = 0  # edges to an entry listed after the reader
    decode_from_prefill: str | None = None  # the rule, when a decode step was made of a prefill graph
    kv_len: int | None = None
    attention_matmuls: int = 0  # BatchMatMuls made to read a KV cache
    dropped_gathers: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # placeholder -> the size it stood for

    def to_dict(self) -> dict[str, Any]:
        return {key: (dict(value) if isinstance(value, dict) else value) for key, value in vars(self).items()}

    def summary(self) -> str:
        """One sentence: what the dump held and what was resolved."""
        parts = [f"{self.nodes} nodes -> {self.operators} operators ({self.folded} data-movement nodes folded)"]
        outside = sum(self.outside.values())
        if outside:
            kinds = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in self.outside.items() if n)
            missing = f"; {self.missing_nodes} producer ids not listed" if self.missing_nodes else ""
            parts.append(f"{outside} inputs from outside the graph ({kinds}{missing})")
        if self.repeated_entries:
            parts.append(f"{self.repeated_ids} ids listed more than once ({self.repeated_entries} extra entries, "
                         "each read as an operator of its own)")
        if self.forward_references:
            parts.append(f"{self.forward_references} edges to data movement listed after its reader")
        if self.decode_from_prefill:
            rule = [f"{self.decode_from_prefill} rule: 1 new token"]
            if self.attention_matmuls:
                rule.append(f"{self.attention_matmuls} attention BatchMatMuls read a KV cache of {self.kv_len} "
                            "from HBM")
            if self.dropped_gathers:
                rule.append(f"{self.dropped_gathers} embedding gathers dropped")
            parts.append(f"a decode step made from a prefill graph ({', '.join(rule)})")
        return "; ".join(parts)


@dataclass(frozen=True)
class DumpImport:
    """A dump read as a graph, with the notes of what was resolved."""

    graph: Graph
    notes: ImportNotes


def import_dump(nodes: Any, name: str, elem_bytes: int = 2, placeholders: Placeholders | None = None,
                decode: PrefillDecode | None = None, conventions: Conventions | None = None) -> DumpImport:
    """The operator graph of a dump's node list and what reading it resolved.

    `placeholders` gives the sizes of the dump's symbolic lengths as written (its `used`
    records those met). With `decode`, a prefill dump (no KV cache input, or an attention
    over a sequence of queries) is read as one decode step by that rule (`PrefillDecode`);
    a decode step's dump is read as written. `conventions` applies the published graph
    rules it turns on (`elkopt.conventions`: reload_activations, slice_input_shape).
    """
    entries = read_entries(nodes)
    importer = _Importer(link_entries(entries), placeholders or Placeholders(), decode,
                         conventions or Conventions())
    graph = importer.graph(name, elem_bytes)
    return DumpImport(graph, importer.notes)


class _Importer:
    """Turns linked entries into operators, node by node (`graph`)."""

    def __init__(self, linked: Linked, placeholders: Placeholders, decode: PrefillDecode | None,
                 conventions: Conventions) -> None:
        self.conventions = conventions
        self.previous: set[str] = set()  # the previous operator node's output and inputs (identities)
        self.linked = linked
        self.entries = linked.entries
        self.names = self._tensor_names()
        self.views: dict[int, View] = {}  # entry position -> its output
        self.kind: dict[str, str] = {}  # tensor from outside the graph -> WEIGHT, KV_CACHE, ...
        self.declared: dict[str, str] = {}  # tensor of a named source node -> its node type
        self.graph_inputs: set[str] = set()
        self.computed: set[str] = set()  # tensors the statements write
        self.kv_axes: dict[str, frozenset[int]] = {}  # tensor -> its axes of KV length (exact rule)
        self.ops: list[Operator] = []
        self.roots: dict[int, str | None] = {}
        self.parsed: dict[int, tuple[list[ein.Statement], dict, str]] = {}  # entry position -> `parse`
        self.kv_caches = self._kv_caches()
        self.sizes = placeholders
        self.converting = decode is not None and (not self.kv_caches or self._sequence_queries())
        self.exact = self.converting and decode.rule == "exact"
        self.kv_sizes = placeholders
        if self.converting:
            self.sizes = Placeholders({**placeholders.values, SEQUENCE_PLACEHOLDER: 1})
            self.kv_sizes = Placeholders({**placeholders.values, SEQUENCE_PLACEHOLDER: decode.kv_len})
        self.notes = ImportNotes(
            nodes=len(self.entries), missing_nodes=len(linked.missing), repeated_ids=linked.repeated_ids,
            repeated_entries=linked.repeated_entries, forward_references=len(linked.forward),
            kv_len=decode.kv_len if self.converting else None)

    # -- names and roots -------------------------------------------------------------------
    def _tensor_names(self) -> list[str]:
        """Entry position -> the tensor its output is: n<id>, or n<id>@<position> for an id
        listed before."""
        return [f"n{e.id}@{e.position}" if e.repeated else f"n{e.id}" for e in self.entries]

    def _root(self, link: Link) -> str | None:
        """The tensor from outside the graph that `link` reads through data movement, or None
        when an operator computes it."""
        if link.outside:
            return f"n{link.id}"
        position = link.position
        if position not in self.roots:
            self.roots[position] = None  # a cycle of data movement reads nothing from outside
            entry = self.entries[position]
            links = self.linked.links[position]
            if entry.is_source or (entry.is_folded and not links):
                root = self.names[position]
            elif entry.is_folded:
                root = self._root(links[self._moved_input(entry)])
            else:
                root = None
            self.roots[position] = root
        return self.roots[position]

    def _moved_input(self, entry: Entry) -> int:
        """The input a data-movement node passes on: a Concat's first input from outside the
        graph (a cache with the new token appended), else its first input."""
        links = self.linked.links[entry.position]
        if entry.type == "Concat":
            for k, link in enumerate(links):
                if self._root(link) is not None:
                    return k
        return 0

    def _kv_caches(self) -> set[str]:
        """Tensors from outside the graph that a BatchMatMul reads as its second operand:
        a decode step's KV cache (the keys of q x K^T, the values of P x V)."""
        caches = set()
        for entry, links in zip(self.entries, self.linked.links):
            if entry.type != "BatchMatMul":
                continue
            if len(links) == 1:  # input1 has no edge: it comes from outside
                caches.add(f"{self.names[entry.position]}.input1")
            elif len(links) > 1 and (root := self._root(links[1])) is not None:
                caches.add(root)
        return caches

    def _sequence_queries(self) -> bool:
        """Whether a BatchMatMul's queries (dims of its output and first operand only) carry
        the sequence placeholder: the attention of a prefill graph, even when it reads its
        keys from outside the graph (a decode step's queries are 1 token)."""
        for entry in self.entries:
            if entry.type != "BatchMatMul" or "einstein_v2" not in entry.text:
                continue
            statements, input_dict, _source = self.parse(entry)
            for statement in statements:
                refs = {r.name: r for r in ein.tensors(statement.rhs)}
                if "input0" not in refs or "input1" not in refs or "input0" not in input_dict:
                    continue
                keys = ein.index_names(refs["input1"])
                output = ein.index_names(statement.output)
                for index, length in zip(refs["input0"].indices, input_dict["input0"]["shape"]):
                    if (isinstance(index, ein.Index) and index.name in output and index.name not in keys
                            and SEQUENCE_PLACEHOLDER in self.sizes.factors(length)):
                        return True
        return False

    # -- the walk --------------------------------------------------------------------------
    def graph(self, name: str, elem_bytes: int) -> Graph:
        for entry in self.entries:
            if entry.is_source or entry.is_folded:
                self.view(entry.position)
                self.notes.folded += entry.is_folded
            else:
                self.node(entry)
        if not self.ops:
            raise DumpError("the dump holds no operator node")
        self.notes.operators = len(self.ops)
        counts = {kind: 0 for kind in (WEIGHT, KV_CACHE, STEP_INPUT, CONSTANT)}
        for kind in self.kind.values():
            counts[kind] += 1
        self.notes.outside = counts
        if self.converting and SEQUENCE_PLACEHOLDER in self.sizes.used | self.kv_sizes.used:
            self.notes.decode_from_prefill = "exact" if self.exact else "published"
        used = {str(p): size for p, size in self.sizes.values.items() if p in self.sizes.used}
        if self.converting and SEQUENCE_PLACEHOLDER in self.kv_sizes.used:
            used[f"{SEQUENCE_PLACEHOLDER} (KV)"] = self.kv_sizes.values[SEQUENCE_PLACEHOLDER]
        self.notes.sizes = used
        return Graph(name, self.ops, elem_bytes=elem_bytes, graph_inputs=self.graph_inputs)

    def view(self, position: int) -> View:
        """The output of the entry at `position` (computed on first use for data movement
        and sources, which an edge may name before they are listed)."""
        if position in self.views:
            return self.views[position]
        entry = self.entries[position]
        if entry.is_source:
            view = self.outside(self.names[position], entry)
        elif entry.is_folded:
            view = self.folded(entry)
        else:  # link_entries refuses an operator read before it is listed
            raise AssertionError(f"{entry.where} is read before it is imported")
        self.views[position] = view
        return view

    def link_view(self, link: Link) -> View:
        return self.outside(f"n{link.id}") if link.outside else self.view(link.position)

    def outside(self, tensor: str, entry: Entry | None = None) -> View:
        """A tensor from outside the graph; what it is is decided where an operator reads it."""
        if entry is not None and entry.source_name is not None:
            self.declared[tensor] = entry.type
        return View(tensor)

    def folded(self, entry: Entry) -> View:
        """A data-movement node: the view of the input it passes on, its axes mapped through
        the node's statement (a Broadcast's new axes hold nothing, a transpose permutes)."""
        links = self.linked.links[entry.position]
        if not links:
            return self.outside(self.names[entry.position])
        if entry.type != "Concat" and len(links) > 1:
            raise DumpError(f"{entry.where}: a {entry.type} is folded into its readers and needs one input, "
                            f"got {len(links)}")
        k = self._moved_input(entry)
        source = self.link_view(links[k])
        if "einstein_v2" not in entry.text:  # a bare node, " - Reshape "
            return View(source.tensor, source.axes, self.names[entry.position]) if entry.type == "Concat" else source
        statements, _inputs, _source = self.parse(entry)
        written = [s for s in statements if s.output.name == "output0"]
        refs = [r for s in written for r in ein.tensors(s.rhs) if r.name == f"input{k}"]
        if not written or not refs:
            raise DumpError(f"{entry.where}: expected a statement writing output0 from input{k}")
        ref, out = refs[0], written[0].output
        bad = [ein.to_source(i) for i in out.indices if not isinstance(i, ein.Index)]
        if bad:
            raise DumpError(f"{entry.where}: output0 is indexed by {', '.join(bad)}; expected plain index names")
        held = source.holds(len(ref.indices))
        if len(held) != len(ref.indices):
            raise DumpError(f"{entry.where}: input{k} is read with {len(ref.indices)} indices, but the node "
                            f"it comes from writes {len(held)} axes")
        axes = tuple(frozenset().union(*(held[j] for j, index in enumerate(ref.indices)
                                         if i.name in ein.index_names(index)))
                     for i in out.indices)
        if entry.type != "Broadcast":  # only a Broadcast's new axes go unread
            axes = tuple(a or ADDED for a in axes)
        via = self.names[entry.position] if entry.type == "Concat" else source.via
        return View(source.tensor, axes, via)

    def parse(self, entry: Entry) -> tuple[list[ein.Statement], dict, str]:
        """The node's statements, input_dict and expression text (parsed once: the
        attention BatchMatMuls are read before the walk too)."""
        if entry.position not in self.parsed:
            try:
                text = ein.parse_node_text(entry.text)
                self.parsed[entry.position] = (text.statements(), text.input_dict, text.source)
            except ValueError as error:  # EinsteinSyntaxError is one
                raise DumpError(f"{entry.where}: {error}") from None
        return self.parsed[entry.position]

    # -- operators -------------------------------------------------------------------------
    def node(self, entry: Entry) -> None:
        where = entry.where
        if "einstein_v2" not in entry.text:
            raise DumpError(f"{where}: expected an einstein_v2(...) expression for a {entry.type} node, "
                            f"found {entry.text.strip()[:60]!r} (only Constant, Parameter and data-movement "
                            "nodes go without one)")
        statements, input_dict, source = self.parse(entry)
        local = self.inputs(entry, input_dict)
        if not statements:
            raise DumpError(f"{where}: expected an einstein_v2 expression, found none")
        writes = [s.output.name for s in statements]
        if writes.count("output0") != 1:
            raise DumpError(f"{where}: expected one statement writing output0, got {writes}")
        read = {r.name for s in statements for r in ein.tensors(s.rhs)}
        unread = [n for n in local if n not in read and n.startswith("input")]
        if unread:
            raise DumpError(f"{where}: input_dict lists {', '.join(unread)}, which no statement reads")
        made: list[Operator] = []
        tensor = self.names[entry.position]
        for statement in statements:
            out = statement.output.name
            written = tensor if out == "output0" else f"{tensor}.{out}"
            label = entry.type if len(statements) == 1 else _label(statement, entry.type)
            local[out] = self.statement(statement, local, written, label, entry, made, source)
        self.ops.extend(made)
        self.views[entry.position] = local["output0"].view
        self.previous = {tensor} | {local[k].view.identity for k in local if k.startswith("input")}

    def inputs(self, entry: Entry, input_dict: dict) -> dict[str, _Input]:
        """Input name -> what it reads: edges feed input0, input1, ... in order; an input
        without an edge comes from outside the graph."""
        local = {}
        for k, link in enumerate(self.linked.links[entry.position]):
            key = f"input{k}"
            if key not in input_dict:
                raise DumpError(f"{entry.where}: edge {k} feeds {key}, which input_dict does not list "
                                f"(it lists {', '.join(input_dict) or 'nothing'})")
            view, shape = self.link_view(link), tuple(input_dict[key]["shape"])
            if view.axes is not None and len(view.axes) != len(shape) and shape not in ((), (1,)):
                raise DumpError(f"{entry.where}: {key} has shape {list(shape)}, but node {link.id} (data "
                                f"movement), which feeds it, writes {len(view.axes)} axes")
            local[key] = _Input(view, shape)
        for key in input_dict:
            if key not in local:
                view = self.outside(f"{self.names[entry.position]}.{key}")
                local[key] = _Input(view, tuple(input_dict[key]["shape"]))
        return local

    def classify(self, tensor: str, shape: tuple[int, ...]) -> str:
        """What a tensor from outside the graph is, from how it is first read (`shape`: its
        axes as written, broadcast axes left out): a KV cache if a BatchMatMul reads it as its
        second operand; as declared by a named source node (Parameter on chip, Constant in
        HBM); else a constant if it holds one element, a step input if it holds the batch
        placeholder, a weight otherwise."""
        if tensor not in self.kind:
            declared = self.declared.get(tensor)
            if tensor in self.kv_caches:
                kind = KV_CACHE
            elif declared is not None:
                kind = STEP_INPUT if declared == "Parameter" else WEIGHT
            elif math.prod(shape) <= 1:
                kind = CONSTANT
            elif any(BATCH_PLACEHOLDER in self.sizes.factors(n) for n in shape):
                kind = STEP_INPUT
            else:
                kind = WEIGHT
            self.kind[tensor] = kind
            if kind in _ON_CHIP:
                self.graph_inputs.add(tensor)
        return self.kind[tensor]

    def statement(self, statement: ein.Statement, local: dict[str, _Input], tensor: str, label: str,
                  entry: Entry, made: list[Operator], source: str) -> _Input:
        """Append the operators of one statement to `made`; what the statement writes."""
        out_name = statement.output.name
        where = _at(entry.where, source, out_name)
        refs = ein.tensors(statement.rhs)
        for ref in refs:
            if ref.name not in local:
                raise DumpError(f"{_at(entry.where, source, ref.name)}: the expression reads {ref.name}, which "
                                "is neither in input_dict nor written by an earlier statement")
        bad = [ein.to_source(i) for i in statement.output.indices if not isinstance(i, ein.Index)]
        if bad:
            raise DumpError(f"{where}: {out_name} is indexed by {', '.join(bad)}; expected "
                            "plain index names on the left-hand side")
        raw = _raw_lengths(statement, refs, local, entry.where, source)
        if self.conventions.slice_input_shape and entry.type == "Slice" and len(refs) == 1:
            _slice_over_input(raw, refs[0], local[refs[0].name].shape)
        adjacent = self.previous | {tensor}  # a node's own intermediates stay on chip
        self.computed.add(tensor)
        written = View(tensor)  # readers index it as they please (dumps reshape implicitly)
        shape = tuple(raw[i.name] for i in statement.output.indices)
        first = {}  # an input read twice is indexed as it is read first
        for ref in refs:
            first.setdefault(ref.name, ref)
        names = list(first)
        operand_dims = {key: _operand_dims(ref, local[key].view) for key, ref in first.items()}
        out_dims = tuple(i.name for i in statement.output.indices)
        used = {d for dims in operand_dims.values() for d in dims}
        dims = [*out_dims, *(d for d in ein.reduced_indices(statement) if d in used and d not in out_dims)]
        body = _strip_casts(statement.rhs)
        reduction = statement.reduction
        is_product = reduction == "sum" and len(names) == 2 and isinstance(body, ein.Binary) and body.op == "*"
        if entry.type in ("Dot", "BatchMatMul") and not is_product:
            raise DumpError(f"{where}: expected `output +=! a * b` for a {entry.type}")
        attention = self.converting and entry.type == "BatchMatMul" and is_product
        kv = self.kv_dims(first, local, raw, attention)
        if attention and kv:
            self.notes.attention_matmuls += 1
        lengths = {d: (self.kv_sizes if d in kv else self.sizes)(raw[d]) for d in raw}
        if entry.type == "Dot":  # as the published parser: a decode Dot's token dim goes
            while len(dims) > 3 and any(lengths[d] == 1 for d in dims):
                dims.remove(next(d for d in dims if lengths[d] == 1))
        if reduction is None:  # an index of length 1 read but not written (a gather's) is no loop
            dims = [d for d in dims if d in out_dims or lengths[d] != 1]
        kept = set(dims)
        out_dims = tuple(d for d in out_dims if d in kept)
        operand_dims = {k: tuple(d for d in v if d in kept) for k, v in operand_dims.items()}
        iteration = tuple(Dim(d, lengths[d]) for d in dims)
        if self.exact:  # by the output's axes as written, as its readers index them
            self.kv_axes[tensor] = frozenset(j for j, i in enumerate(statement.output.indices) if i.name in kv)

        def operand(key: str) -> Operand:
            view = local[key].view
            dims_ = operand_dims[key]
            if attention and key == names[1] and kv & set(dims_) and view.tensor in self.computed:
                # this step's K or V: the decode step reads the cache instead
                cache = f"{tensor}.cache"
                self.kind[cache] = KV_CACHE
                return Operand(cache, dims_, Storage.HBM)
            storage = Storage.CHIP
            if view.tensor not in self.computed:
                kind = self.classify(view.tensor, _held_shape(local[key]))
                storage = Storage.HBM if kind not in _ON_CHIP else Storage.CHIP
            if (self.conventions.reload_activations and storage == Storage.CHIP and dims_
                    and key.startswith("input") and view.identity not in adjacent):
                # the published parser: only the previous operator's output and inputs stay on chip
                return Operand(f"{view.tensor}.reload", dims_, Storage.HBM)
            return Operand(view.tensor, dims_, storage)

        def emit(kind: OpKind, ins: tuple[Operand, ...], out: str = tensor, reduce: str | None = None) -> None:
            name = f"{tensor}.{entry.type}" + (f".{len(made)}" if made else "")
            try:
                made.append(Operator(name, label, kind, iteration, Operand(out, out_dims, Storage.CHIP),
                                     ins, reduce))
            except ValueError as error:
                raise DumpError(f"{where}: {error}") from None

        nested = [ref.name for ref in refs if any(isinstance(n, ein.TensorRef)
                                                  for i in ref.indices for n in ein.walk(i))]
        if reduction is not None:
            if is_product:
                emit(OpKind.MATMUL, tuple(operand(k) for k in names), reduce="sum")
            elif len(names) == 1:
                emit(OpKind.REDUCE, (operand(names[0]),), reduce="sum" if reduction == "sum" else "max")
            else:
                raise DumpError(f"{where}: expected a reduction over one input, or a sum of a product "
                                f"of two, got {reduction} over {names}")
        elif nested:
            table = names[0]
            if len(names) != 2 or nested != [table]:
                raise DumpError(f"{where}: expected a gather `table[index[...], ...]` of two inputs, got "
                                f"{ein.to_source(statement.rhs)}")
            if self.converting:  # as the published parser: the embedded tokens are the step's input
                self.notes.dropped_gathers += 1
                self.graph_inputs.add(tensor)
                return _Input(written, shape)
            emit(OpKind.GATHER, (operand(table), operand(names[1])))
        elif not names:  # a constant fill: an on-chip input
            self.graph_inputs.add(tensor)
            return _Input(written, shape)
        elif isinstance(body, ein.TensorRef):
            emit(OpKind.SLICE, (operand(names[0]),))
        elif len(names) == 1:
            emit(OpKind.UNARY, (operand(names[0]),))
        else:  # two inputs make one binary operator; more, a chain of them
            previous = operand(names[0])
            for k, key in enumerate(names[1:], start=1):
                out = tensor if k == len(names) - 1 else f"{tensor}.{k}"
                emit(OpKind.BINARY, (previous, operand(key)), out)
                previous = Operand(out, out_dims, Storage.CHIP)
        return _Input(written, shape)

    def kv_dims(self, first: dict[str, ein.TensorRef], local: dict[str, _Input], raw: dict[str, int],
                attention: bool) -> set[str]:
        """The dims sized by the KV length in a decode step made from a prefill graph: the
        sequence dims of an attention BatchMatMul's second operand, and with the exact rule
        every sequence dim indexing an axis of KV length."""
        if not self.converting:
            return set()
        kv: set[str] = set()
        for position, (key, ref) in enumerate(first.items()):
            view = local[key].view
            if attention and position == 1:
                axes = range(len(ref.indices))
            elif self.exact and self.kv_axes.get(view.tensor):
                held, long = view.holds(len(ref.indices)), self.kv_axes[view.tensor]
                axes = [j for j in range(len(ref.indices)) if j < len(held) and held[j] & long]
            else:
                continue
            kv.update(n for j in axes for n in ein.index_names(ref.indices[j]))
        return {d for d in kv if d in raw and SEQUENCE_PLACEHOLDER in self.sizes.factors(raw[d])}


def _slice_over_input(raw: dict[str, int], ref: ein.TensorRef, shape: tuple[int, ...]) -> None:
    """The published parser sizes a Slice by the tensor it slices: each output index read
    alone by an input axis takes that axis's length."""
    for index, length in zip(ref.indices, shape):
        names = ein.index_names(index)
        if len(names) == 1 and ein.is_affine(index):
            raw[next(iter(names))] = length


def _held_shape(read: _Input) -> tuple[int, ...]:
    """The shape as written of the axes that hold the tensor's data (not broadcast ones)."""
    held = read.view.holds(len(read.shape))
    return tuple(n for n, axes in zip(read.shape, held) if axes)


def _operand_dims(ref: ein.TensorRef, view: View) -> tuple[str, ...]:
    """The dims an input reference reads: every index name in its indices, first use first
    (``input0[N0 / 40, N0 % 40]`` reads N0; ``input0[input1[N], D]`` reads N and D), leaving
    out the axes a Broadcast added."""
    held = view.holds(len(ref.indices))
    names = (n.name for j, i in enumerate(ref.indices) if j >= len(held) or held[j]
             for n in ein.walk(i) if isinstance(n, ein.Index))
    return tuple(dict.fromkeys(names))


def _at(where: str, source: str, name: str) -> str:
    """`where` and the column of the expression at which tensor `name` is first indexed."""
    column = source.find(f"{name}[")
    return f"{where} at column {column}" if column >= 0 else where


def _raw_lengths(statement: ein.Statement, refs: list[ein.TensorRef], local: dict[str, _Input],
                 node: str, source: str) -> dict[str, int]:
    """Index name -> length as written: `where` bounds first, then plain indices of the
    inputs (which must agree), then what single-index affine expressions allow (the smallest)."""
    lengths = dict(statement.bounds)
    plain: dict[str, tuple[int, str]] = {}
    inferred: dict[str, int] = {}
    for ref in refs:
        shape = local[ref.name].shape
        if len(shape) != len(ref.indices) and not (shape in ((), (1,)) and not ref.indices):
            raise DumpError(f"{_at(node, source, ref.name)}: {ref.name} has shape {list(shape)} but "
                            f"{len(ref.indices)} indices")
        for index, length in zip(ref.indices, shape):
            if isinstance(index, ein.Index):
                seen = plain.setdefault(index.name, (length, ref.name))
                if seen[0] != length and index.name not in lengths:
                    raise DumpError(f"{_at(node, source, ref.name)}: index {index.name} has length {seen[0]} "
                                    f"in {seen[1]} and {length} in {ref.name}")
            elif ein.is_affine(index) and len(ein.index_names(index)) == 1:
                [name] = ein.index_names(index)
                extent = _extent(index, length)
                if extent is not None and extent > 0:
                    inferred[name] = min(extent, inferred.get(name, extent))
    for name, (length, _ref) in plain.items():
        lengths.setdefault(name, length)
    for name, length in inferred.items():
        lengths.setdefault(name, length)
    needed = ein.index_names(statement.output) | {
        n for ref in refs for i in ref.indices for n in ein.index_names(i)}
    missing = sorted(needed - set(lengths))
    if missing:
        raise DumpError(f"{_at(node, source, statement.output.name)}: indices {missing} have no length "
                        "(no input indexes them and no "
                        f"`where` bounds them); expected `where {missing[0]} in <n>`")
    return lengths


def _extent(index: ein.Expr, length: int) -> int | None:
    """How far the one index name in `index` runs for `index` to stay within `length`
    (None when the expression does not say)."""
    if isinstance(index, ein.Index):
        return length
    if not isinstance(index, ein.Binary):
        return None
    left, right = index.left, index.right
    if isinstance(left, ein.Number) and index.op == "+":
        left, right = right, left
    if not isinstance(right, ein.Number):
        return None
    c = right.value
    if index.op == "+":
        inner = length - c
    elif index.op == "-":
        inner = length + c
    elif index.op == "*" and c > 0:
        inner = -(-length // c)
    elif index.op in ("/", "//") and c > 0:
        inner = length * c
    else:
        return None
    return _extent(left, inner)


def _strip_casts(expr: ein.Expr) -> ein.Expr:
    while isinstance(expr, ein.Call) and expr.method == "cast":
        expr = expr.receiver
    return expr


_SYMBOL_LABELS = {symbol: label for label, symbol in BINARY_SYMBOLS.items()}
_REDUCTION_LABELS = {"sum": "Sum", "max": "Max", "min": "Min"}


def _label(statement: ein.Statement, node_type: str) -> str:
    """The label of one statement of a multi-statement node: its reduction, its outermost
    arithmetic operator or function (``Exp``), else the node type."""
    if statement.reduction is not None:
        return _REDUCTION_LABELS[statement.reduction]
    body = _strip_casts(statement.rhs)
    if isinstance(body, ein.Binary) and body.op in _SYMBOL_LABELS:
        return _SYMBOL_LABELS[body.op]
    if isinstance(body, ein.Call) and body.method == "call" and body.name:
        return body.name.capitalize()
    return node_type
