"""onnxruntime's fused attention operators (domain ``com.microsoft``) as the zoo's attention,
for `elkopt.graph.onnx_ops`: onnxruntime's model builder (onnxruntime-genai) and optimum's
higher ``--optimize`` levels write a whole attention as one node.

- ``GroupQueryAttention(query, key, value, past_key, past_value, seqlens_k,
  total_sequence_length[, cos_cache, sin_cache])`` (attributes ``num_heads``,
  ``kv_num_heads``, ``do_rotary``): with ``do_rotary`` the zoo's rotary on q and k (six
  operators each, the cos/sin caches read from HBM, T rows of D), then the scores
  ``BatchMatMul`` over (B, Hkv, G, T, S, D), the ``Divide`` by the scale, the mask ``Add``
  (the causal and padding mask the node builds from ``seqlens_k``, an on-chip input
  ``<node>.mask``), the zoo's softmax (4) and the context ``BatchMatMul``. With a past
  cache (an HBM input, ``*past*``) the keys and values are read from HBM at the total
  length (past + new: the new entries are the folded cache write) and the present outputs
  are that cache; without one they are the node's own k and v, on chip.
- ``MultiHeadAttention(query, key, value[, bias, key_padding_mask, attention_bias,
  past_key, past_value])`` (``num_heads``): the same with as many KV heads as query heads
  and no rotary; a bias input is refused by name; the mask ``Add`` reads the given mask or
  bias (as [B, S]), or ``<node>.mask`` when ``unidirectional``.
- ``RotaryEmbedding(input, position_ids, cos_cache, sin_cache)``: the zoo's rotary.

Query, key and value are the BSH layout ([B, S, heads x D]); a packed QKV query (``key`` and
``value`` omitted: onnxruntime-genai's layout) is first the zoo's three Slices ``<node>.q``,
``.k``, ``.v``.
"""

from __future__ import annotations

import onnx

from elkopt.graph.builders import chip, hbm, softmax_operators
from elkopt.graph.ir import Operand, OpKind
from elkopt.graph.onnx_importer import _HBM, _attribute, _Builder, _optional_input
from elkopt.graph.onnx_shapes import OnnxImportError


class _AttentionOps:
    """Handlers mixed into `onnx_ops._Importer` (which provides `_source`, `_shape`, `_emit` ...)."""

    def _group_query_attention(self, node: onnx.NodeProto, where: str, base: str) -> None:
        heads, kv_heads = _attribute(node, "num_heads"), _attribute(node, "kv_num_heads")
        rotary = bool(_attribute(node, "do_rotary", 0))
        tables = (_optional_input(node, 7), _optional_input(node, 8)) if rotary else None
        self._attend(node, where, base, heads, kv_heads, past=(3, 4), tables=tables, mask=None,
                     masked=True)

    def _multi_head_attention(self, node: onnx.NodeProto, where: str, base: str) -> None:
        heads = _attribute(node, "num_heads")
        mask = _optional_input(node, 5) or _optional_input(node, 4)
        if _optional_input(node, 3) is not None:
            raise OnnxImportError(f"{where}: a bias input is not imported (export the projections with their "
                                  "biases)")
        self._attend(node, where, base, heads, heads, past=(6, 7), tables=None, mask=mask,
                     masked=bool(_attribute(node, "unidirectional", 0)))

    def _rotary_embedding(self, node: onnx.NodeProto, where: str, base: str) -> None:
        x, out = node.input[0], node.output[0]
        shape = self._shape(x, where)
        heads = _attribute(node, "num_heads", 0)
        if len(shape) == 3:
            if not heads:
                raise OnnxImportError(f"{where}: a 3-D input needs the num_heads attribute")
            batch, tokens, width = shape
            dims = {"B": batch, "T": tokens, "H": heads, "D": width // heads}
            x_dims = ("B", "T", "H", "D")
        else:
            batch, heads, tokens, depth = shape
            dims = {"B": batch, "H": heads, "T": tokens, "D": depth}
            x_dims = ("B", "H", "T", "D")
        self.shapes[out] = shape
        self._computed(out, self._rope(base, self._read(x, x_dims, where), dims, node.input[2], node.input[3]))

    # -- the shared decomposition ----------------------------------------------------------
    def _rope(self, base: str, x: Operand, dims: dict[str, int], cos: str, sin: str) -> str:
        """The zoo's rotary (`builders._rotary`), the cos/sin caches read from HBM (T x D)."""
        axes = tuple(dims)
        half = {**dims, "D": dims["D"] // 2}
        g = _Builder(self, base)
        product = g.binary(f"{base}.cos", "Multiply", dims, x, hbm(self._source(cos, base).tensor, "T", "D"))
        self._emit(self._claim(f"{base}.first_half"), "Slice", OpKind.SLICE, half, tuple(half), (x,), base)
        second = self._emit(self._claim(f"{base}.second_half"), "Slice", OpKind.SLICE, half, tuple(half), (x,), base)
        negated = g.unary(f"{base}.negate", "Negative", half, chip(second, *axes))
        rotated = g.binary(f"{base}.sin", "Multiply", dims, chip(negated, *axes),
                           hbm(self._source(sin, base).tensor, "T", "D"))
        return g.binary(f"{base}.add", "Add", dims, chip(product, *axes), chip(rotated, *axes))

    def _attend(self, node: onnx.NodeProto, where: str, base: str, heads: int, kv_heads: int,
                past: tuple[int, int], tables: tuple[str | None, str | None] | None, mask: str | None,
                masked: bool) -> None:
        query, key, value = _optional_input(node, 0), _optional_input(node, 1), _optional_input(node, 2)
        if not heads or not kv_heads or (key is None) != (value is None):
            raise OnnxImportError(f"{where}: expected query, key and value inputs (or a packed QKV query) and "
                                  "the num_heads (and kv_num_heads) attributes")
        batch, tokens, packed = self._shape(query, where)
        depth = packed // heads if key is not None else packed // (heads + 2 * kv_heads)
        width, group = heads * depth, heads // kv_heads
        q_dims = {"B": batch, "T": tokens, "Hkv": kv_heads, "G": group, "D": depth}
        k_dims = {"B": batch, "T": tokens, "Hkv": kv_heads, "D": depth}
        if key is None:  # packed QKV: the zoo's q, k and v Slices of the fused projection
            source = self._read(query, ("B", "T", "N"), where)
            parts = []
            for part, size in (("q", width), ("k", kv_heads * depth), ("v", kv_heads * depth)):
                space = {"B": batch, "T": tokens, "N": size}
                parts.append(self._emit(self._claim(f"{base}.{part}"), "Slice", OpKind.SLICE, space, tuple(space),
                                        (source,), where))
            q, k = chip(parts[0], *q_dims), chip(parts[1], *k_dims)
            value_tensor = parts[2]
        else:
            q = self._read(query, tuple(q_dims), where)
            k = self._read(key, tuple(k_dims), where)
            value_tensor = None
        if tables is not None:
            if None in tables:
                raise OnnxImportError(f"{where}: do_rotary needs the cos_cache and sin_cache inputs")
            q = chip(self._rope(f"{base}.rope_q", q, q_dims, *tables), *q_dims)
            k = chip(self._rope(f"{base}.rope_k", k, k_dims, *tables), *k_dims)
        past_key, past_value = _optional_input(node, past[0]), _optional_input(node, past[1])
        cached = past_key is not None and self._source(past_key, where).origin == _HBM
        if cached:
            keys = self._source(past_key, where).tensor
            values = self._source(past_value, where).tensor
            total = self._shape(past_key, where)[2] + tokens
            key_operand = hbm(keys, "B", "Hkv", "S", "D")
            value_operand = hbm(values, "B", "Hkv", "S", "D")
            for k_out, cache in ((1, past_key), (2, past_value)):  # the present cache is the HBM cache
                if len(node.output) > k_out and node.output[k_out]:
                    self.sources[node.output[k_out]] = self._source(cache, where)
        else:
            total = tokens
            key_operand = Operand(k.tensor, ("B", "S", "Hkv", "D"), k.storage)
            value_operand = (chip(value_tensor, "B", "S", "Hkv", "D") if value_tensor is not None
                             else self._read(value, ("B", "S", "Hkv", "D"), where))
            for k_out, operand in ((1, key_operand), (2, value_operand)):
                if len(node.output) > k_out and node.output[k_out]:
                    self._computed(node.output[k_out], operand.tensor)
        g = _Builder(self, where)
        space = {"B": batch, "Hkv": kv_heads, "G": group, "T": tokens, "S": total}
        s_dims, rows = tuple(space), tuple(space)[:-1]
        scores = self._emit(self._claim(f"{base}.scores"), "BatchMatMul", OpKind.MATMUL, {**space, "D": depth},
                            s_dims, (Operand(q.tensor, ("B", "T", "Hkv", "G", "D"), q.storage), key_operand),
                            where, "sum")
        scores = g.binary(f"{base}.scale", "Divide", space, chip(scores, *s_dims), self._scalar(f"{base}.scale"))
        if mask is not None or masked:
            mask_operand = (self._read(mask, ("B", "S"), where) if mask is not None
                            else self._scalar(f"{base}.mask", "B", "S"))
            scores = g.binary(f"{base}.mask", "Add", space, chip(scores, *s_dims), mask_operand)
        probs = softmax_operators(g, f"{base}.softmax", space, rows, chip(scores, *s_dims))
        context = self._emit(self._claim(f"{base}.context"), "BatchMatMul", OpKind.MATMUL, {**space, "D": depth},
                             (*rows, "D"), (chip(probs, *s_dims), value_operand), where, "sum")
        self.shapes[node.output[0]] = (batch, tokens, width)
        self._computed(node.output[0], context)
