"""Mixture-of-experts layers and multi-head latent attention for decode graphs.

Routing math
------------
A token picks `k` of `E` routed experts. `Routing` says how likely each expert is to be
picked: `pi_e`, the probability that a given token routes to expert e (sum over e = k,
each at most 1). A decode step of `n` tokens (batch x new tokens) reads from HBM only the
experts at least one token routes to; with independent tokens the expected number of
distinct experts is ``D = sum_e 1 - (1 - pi_e)^n``. Uniform routing (pi_e = k/E) gives the
closed form ``E * (1 - (1 - k/E)^n)``: E=8, k=2, n=2 gives 3.5 experts. `workload.routing`
selects the distribution (`parse_routing`):

- ``uniform`` (the default);
- ``zipf:<s>``: expert e (0-based) has popularity ``(e + 1)^-s``;
- ``loads:<l0>,<l1>,...`` (commas or slashes): one load per expert, as probabilities,
  shares or token counts.

Popularities and loads become inclusion probabilities by scaling them to sum k and capping
them at 1 (water filling: the excess of a capped expert goes to the others in proportion),
so loads that are already probabilities with sum k are kept as given.

How the IR holds the expected bytes
-----------------------------------
The routed experts of a layer are one family of operators over `G` expert groups of `C`
token slots each, ``G * C = n * k`` (every token's k expert assignments, so the FLOPs are
exactly ``2 n k H F`` per expert matmul), with `G` the largest divisor of ``n k`` that is
at most E (`expert_groups`: k at n = 1, E once n k is a multiple of E). Their weight
operands are ``[G, K, N]``: G whole experts, which the plan tables see as the SRAM
footprint and the interconnect delivers. `Operator.load_factor = D / G` scales the bytes
read from HBM (`Operator.hbm_bytes`) to the expected D experts, so the HBM bytes of a
layer's routed experts are ``D x (bytes of one expert)``, rounded to the byte per weight
tensor. Tokens are dispatched to the groups by a Slice (``<p>.experts.dispatch``); the
un-dispatch back to token order is folded into the combine's Multiply, which reads the
experts' outputs [G, C, H] as [B, T, S, H] (S: the k slots of a token).

Router and top-k operators
--------------------------
Router Dot to E logits, softmax (4 operators), then top-k as a max-reduction family over
the expert dim X, all [B, T, X] or [B, T]:

- ``topk.max<j>`` (j = 0..k-1): Reduce max over X, the j-th largest probability;
- ``topk.drop<j>`` (j = 0..k-2): binary ``DropMax``, the probabilities with the maxima
  found so far removed (set to -inf), input of the next max;
- ``topk.select``: binary ``GreaterEqual`` of the probabilities and the k-th largest, the
  routing decision (1 for the k chosen experts);
- ``topk.gates``: Multiply of the probabilities by the selection; with
  `Architecture.renormalize_gates` a Sum over X and a Divide follow (Mixtral);
- ``experts.gate_slots``: Slice, the k non-zero gates of each token [B, T, S].

Every routed-expert operator with HBM data has ``routed_by`` = the ``topk.select`` tensor:
its load depends on that routing decision (`router_dependencies`).

Waiting for the router, or preloading speculatively
---------------------------------------------------
Which experts a step needs is known once the layer's ``topk.select`` has run, so the load
of an operator with ``routed_by`` starts no earlier than the end of that operator (the
timeline enforces it through `OpSchedule.load_after`, the checker verifies it from the
graph): *waiting*. A schedule may instead preload the ``m`` likeliest experts (largest
pi_e) before the router and, after it, only the experts it missed: expected bytes
``m + sum_{e outside the m likeliest} 1 - (1 - pi_e)^n`` experts, uniform
``m + (E - m)(1 - (1 - k/E)^n)``, never fewer than the D of waiting. `speculate` turns
a graph into that form exactly: each routed operator over G groups becomes two parts of
one output along the expert dim X (`Operator.part`), ``<op>.speculative`` over m groups
(m whole experts, load_factor 1, no ``routed_by``: no wait) and ``<op>.missed`` over the
other G - m (``routed_by`` kept, load_factor = expected misses / (G - m)). FLOPs and the
SRAM footprint (G experts' weights, as waiting holds) are unchanged; only the HBM bytes
and the wait move. Hence ``m <= G - 1`` (the operands hold G experts: a speculative expert
the batch does not route to is overwritten by a miss), except ``m = E`` when G = E (every
expert preloaded, no misses, no wait); m = 0 is the waiting graph itself. Which m to use
is a decision of the pipeline (`elkopt.pipeline.choose_moe_preload`, `planning.moe_preload`):
"auto" weighs m = 0, round(D) and E (capped) by planning each graph with the Static
scheduler, plans the fastest and the waiting graph with the scheduler asked for and keeps
the faster, so the plan is never slower than waiting; "wait", "all" or a count fix m. One
m serves every MoE layer (they repeat). The run's stats say what was chosen
(``moe_experts_preloaded``, ``moe_experts_read``, ``moe_wait_ms``, ``moe_chosen_ms``).
Speculation helps when the router's wait leaves HBM idle (small batches, where the misses
are few) or when nearly every expert is read anyway (preloading all costs almost nothing).

Multi-head latent attention (DeepSeek-V2) in decode
---------------------------------------------------
The weight-absorbed form of inference engines: the cache holds per token the normalised
latent ``[B, S, kv_lora_rank]`` and the rotary key ``[B, S, qk_rope_head_dim]``, each
read once from HBM and shared by all heads: the latent by the Slice ``<p>.latent_cache``
(it feeds both the scores and the context), the rotary keys by ``scores_rope``. Queries
are absorbed into the latent space by the key half of kv_b_proj (``q_absorb``), scores are
the latent part plus the rotary part, the context is taken in latent space and mapped to
the value heads by the value half of kv_b_proj (``v_absorb``). The new token's latent and
rotary key go to the cache (folded, like the K and V of standard decode). A forward pass
uses the same operators with the latents and rotary keys of its own tokens on chip
(absorbed too, a simplification: prefill engines expand the latent per head instead); a
prefill step stores both to HBM; a chunk after cached tokens is not built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .arch import Architecture
from .builders import (_activation, _GraphBuilder, _linear, _rotary, _Step, chip, hbm, norm_operators,
                       softmax_operators)
from .ir import Dim, Graph, Operand, OpKind, Operator, Storage

ROUTING_FORMS = ("uniform", "zipf:<s>", "loads:<l0>,<l1>,...")
_ROUTING_HELP = ("workload.routing must be 'uniform', 'zipf:<s>' (s >= 0: expert e has popularity (e+1)^-s) "
                 "or 'loads:<l0>,<l1>,...' (one load per expert, commas or slashes: probabilities or counts)")


@dataclass(frozen=True)
class Routing:
    """How tokens spread over the routed experts: `kind` "uniform", "zipf" (exponent
    `zipf_s`) or "loads" (`loads`, one non-negative number per expert)."""

    kind: str = "uniform"
    zipf_s: float = 0.0
    loads: tuple[float, ...] = ()

    def describe(self) -> str:
        """The `workload.routing` text of this routing."""
        if self.kind == "zipf":
            return f"zipf:{self.zipf_s:g}"
        if self.kind == "loads":
            return "loads:" + ",".join(f"{x:g}" for x in self.loads)
        return "uniform"


def parse_routing(text: str | Routing | None) -> Routing:
    """`workload.routing` text as a `Routing`; ValueError naming workload.routing and the
    accepted forms (`ROUTING_FORMS`) on anything else. None means uniform."""
    if text is None or isinstance(text, Routing):
        return text or Routing()
    if not isinstance(text, str):
        raise ValueError(f"{_ROUTING_HELP}; got {text!r}")
    kind, _, rest = text.strip().partition(":")
    try:
        if kind == "uniform" and not rest:
            return Routing()
        if kind == "zipf":
            s = float(rest)
            if math.isfinite(s) and s >= 0:
                return Routing("zipf", zipf_s=s)
        elif kind == "loads":
            loads = tuple(float(x) for x in rest.replace("/", ",").replace(" ", ",").split(",") if x)
            if loads and all(math.isfinite(x) and x >= 0 for x in loads) and any(loads):
                return Routing("loads", loads=loads)
    except ValueError:
        pass
    raise ValueError(f"{_ROUTING_HELP}; got {text!r}")


def inclusion_probabilities(routing: Routing, n_experts: int, top_k: int) -> tuple[float, ...]:
    """Per expert, the probability pi_e that one token routes to it (sum k, each <= 1).

    Popularities (zipf) or loads are scaled to sum k and capped at 1, the excess going to
    the uncapped experts in proportion. Example: loads 3, 1, 0, 0 with k = 2 give 1, 1, 0, 0.
    """
    routing = parse_routing(routing)
    if routing.kind == "uniform":
        return (top_k / n_experts,) * n_experts
    if routing.kind == "zipf":
        weights = [(e + 1) ** -routing.zipf_s for e in range(n_experts)]
    else:
        weights = list(routing.loads)
        if len(weights) != n_experts:
            raise ValueError(f"workload.routing {routing.describe()!r} gives {len(weights)} expert loads; the "
                             f"model has {n_experts} routed experts: give one load per expert")
        if sum(w > 0 for w in weights) < top_k:
            raise ValueError(f"workload.routing {routing.describe()!r}: only {sum(w > 0 for w in weights)} experts "
                             f"have a load, but every token picks {top_k} distinct experts: give at least "
                             f"{top_k} positive loads")
    capped: set[int] = set()
    while True:
        free = sum(w for e, w in enumerate(weights) if e not in capped)
        scale = (top_k - len(capped)) / free if free else 0.0  # nothing left to share: 0
        over = {e for e, w in enumerate(weights) if e not in capped and w * scale >= 1}
        if not over:
            return tuple(1.0 if e in capped else w * scale for e, w in enumerate(weights))
        capped |= over


def expected_experts(routing: Routing | str | None, n_experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts `tokens` independent tokens route to:
    ``sum_e 1 - (1 - pi_e)^tokens``; uniform: ``E * (1 - (1 - k/E)^tokens)``."""
    routing = parse_routing(routing)
    if routing.kind == "uniform":
        return n_experts * (1 - (1 - top_k / n_experts) ** tokens)
    return sum(1 - (1 - p) ** tokens for p in inclusion_probabilities(routing, n_experts, top_k))


def expert_groups(tokens: int, top_k: int, n_experts: int) -> int:
    """G: the largest divisor of tokens x top_k that is at most n_experts (module doc)."""
    slots = tokens * top_k
    return max(d for d in range(1, min(slots, n_experts) + 1) if slots % d == 0)


def experts_loaded(arch: Architecture, routing: Routing | str | None, tokens: int) -> float | None:
    """Expected distinct routed experts read per expert layer in a step of `tokens` tokens
    (None for a dense model)."""
    if not arch.is_moe:
        return None
    return expected_experts(routing, arch.n_experts, arch.experts_per_token, tokens)


# ---------------------------------------------------------------- the MoE MLP


def add_moe_mlp(g: _GraphBuilder, arch: Architecture, step: _Step, p: str, x: str,
                routing: Routing | str | None = None) -> str:
    """Router, top-k, shared experts, routed experts and their weighted combine; returns the
    MLP output [B, T, H] (module doc)."""
    rows, r, hidden = step.rows, tuple(step.rows), arch.hidden
    n_experts, top_k = arch.n_experts, arch.experts_per_token
    tokens = step.batch * step.tokens
    space = {**rows, "X": n_experts}
    every = (*r, "X")
    logits = _linear(g, f"{p}.router", step.dot_rows, x, hidden, n_experts, bias=False)
    probs = softmax_operators(g, f"{p}.router_softmax", space, r, chip(logits, *every))
    select = _top_k(g, p, space, r, probs, top_k)
    gates = g.binary(f"{p}.topk.gates", "Multiply", space, chip(probs, *every), chip(select, *every))
    if arch.renormalize_gates:
        total = g.reduce(f"{p}.topk.sum", "sum", space, chip(gates, *every), r)
        gates = g.binary(f"{p}.topk.normalize", "Divide", space, chip(gates, *every), chip(total, *r))
    shared = None
    if arch.shared_experts:  # every token's experts: one dense MLP, independent of the router
        shared = _expert_mlp(g, arch, f"{p}.shared", step.dot_rows, (*r,), x,
                             arch.shared_experts * arch.expert_ffn)

    groups = expert_groups(tokens, top_k, n_experts)
    slots = tokens * top_k // groups
    factor = expected_experts(routing, n_experts, top_k, tokens) / groups
    grid = {"X": groups, "C": slots}
    dispatched = g.add(f"{p}.experts.dispatch", "Slice", OpKind.SLICE, {**grid, "H": hidden},
                       ("X", "C", "H"), (chip(x, "X", "C", "H"),))
    routed = _expert_mlp(g, arch, f"{p}.experts", grid, ("X", "C"), dispatched, arch.expert_ffn,
                         expert_dim="X", load_factor=factor, routed_by=select)
    slot_rows = {**rows, "S": top_k}
    gate_slots = g.slice(f"{p}.experts.gate_slots", slot_rows, gates, (*r, "S"))
    out_space = {**slot_rows, "H": hidden}
    weighted = g.binary(f"{p}.experts.weight", "Multiply", out_space, chip(routed, *r, "S", "H"),
                        chip(gate_slots, *r, "S"))
    y = g.reduce(f"{p}.experts.combine", "sum", out_space, chip(weighted, *out_space), (*r, "H"))
    if shared is not None:
        y = g.binary(f"{p}.add_shared", "Add", {**rows, "H": hidden}, chip(y, *r, "H"), chip(shared, *r, "H"))
    return y


def _top_k(g: _GraphBuilder, p: str, space: dict[str, int], r: tuple[str, ...], probs: str, top_k: int) -> str:
    """k max reductions with k-1 DropMax between them, then the GreaterEqual selection."""
    every = (*r, "X")
    current = probs
    for j in range(top_k):
        peak = g.reduce(f"{p}.topk.max{j}", "max", space, chip(current, *every), r)
        if j < top_k - 1:
            current = g.binary(f"{p}.topk.drop{j}", "DropMax", space, chip(current, *every), chip(peak, *r))
    return g.binary(f"{p}.topk.select", "GreaterEqual", space, chip(probs, *every), chip(peak, *r))


def _expert_mlp(g: _GraphBuilder, arch: Architecture, p: str, dot_rows: dict[str, int],
                rows: tuple[str, ...], x: str, ffn: int, expert_dim: str | None = None,
                load_factor: float = 1.0, routed_by: str | None = None) -> str:
    """A gated (gate_up Dot, 2 Slices, activation, product, down Dot) or plain expert MLP
    over `dot_rows`; with `expert_dim` its weights carry that dim ([X, K, N]) and the Dots
    get `load_factor` and `routed_by`."""
    row_dims = {**dot_rows}
    row_names = tuple(row_dims)

    def dot(name: str, inp: str, n_in: int, n_out: int) -> str:
        weight = (expert_dim, "K", "N") if expert_dim else ("K", "N")
        g.ops.append(Operator(name, "Dot", OpKind.MATMUL,
                              tuple(Dim(d, v) for d, v in {**row_dims, "N": n_out, "K": n_in}.items()),
                              chip(name, *row_names, "N"),
                              (chip(inp, *row_names, "K"), hbm(f"{name}.weight", *weight)),
                              reduce="sum", load_factor=load_factor, routed_by=routed_by))
        return name

    # element-wise pieces run over the token rows (decode Dots drop T; the rows keep it)
    ew = {d: (dot_rows[d] if d in dot_rows else 1) for d in rows}
    hidden_rows = {**ew, "F": ffn}
    if arch.gated:
        fused = dot(f"{p}.gate_up", x, arch.hidden, 2 * ffn)
        gate = g.slice(f"{p}.gate", hidden_rows, fused)
        up = g.slice(f"{p}.up", hidden_rows, fused)
        act = _activation(g, f"{p}.act", arch.activation, hidden_rows, gate)
        h = g.binary(f"{p}.gate_times_up", "Multiply", hidden_rows, chip(act, *hidden_rows),
                     chip(up, *hidden_rows))
    else:
        h = dot(f"{p}.fc1", x, arch.hidden, ffn)
        h = _activation(g, f"{p}.act", arch.activation, hidden_rows, h)
    return dot(f"{p}.down", h, ffn, arch.hidden)


# ---------------------------------------------------------------- latent attention


def add_latent_attention(g: _GraphBuilder, arch: Architecture, step: _Step, p: str, x: str,
                         mask: Operand | None) -> str:
    """Multi-head latent attention in the weight-absorbed form (module doc); returns the
    output projection. Decode reads the latent cache from HBM; a forward pass attends to
    its own normalised latents and rotary keys on chip (and, when the step stores its KV,
    writes both to HBM)."""
    if getattr(step, "cached", 0):
        raise ValueError(f"architecture {arch.name!r}: multi-head latent attention after cached tokens (a chunk "
                         "of a chunked prefill) is not built; use workload.kind=decode or a whole prompt")
    rows, r = step.rows, tuple(step.rows)
    heads, nope, rope, rank = arch.n_heads, arch.qk_nope_head_dim, arch.qk_rope_head_dim, arch.kv_lora_rank
    q = _linear(g, f"{p}.q", step.dot_rows, x, arch.hidden, heads * arch.head_dim, bias=False)
    q_nope = g.slice(f"{p}.q_nope", {**rows, "Hq": heads, "D": nope}, q)
    q_rope = g.slice(f"{p}.q_rope", {**rows, "Hq": heads, "D": rope}, q)
    q_rope = _rotary(g, f"{p}.rope_q", q_rope, (*r, "Hq", "D"), {**rows, "Hq": heads, "D": rope})
    # this step's latents and rotary keys (in decode appended to the cache: folded data movement)
    kv = _linear(g, f"{p}.kv_a", step.dot_rows, x, arch.hidden, rank + rope, bias=False)
    c_kv = g.slice(f"{p}.latent", {**rows, "C": rank}, kv)
    c_kv = norm_operators(g, f"{p}.kv_norm", rows, {"C": rank}, chip(c_kv, *r, "C"), arch.norm,
                          g.constant("kv_lora_rank"), g.constant("norm_eps"), hbm(f"{p}.kv_norm.weight", "C"))
    k_rope = g.slice(f"{p}.k_rope", {**rows, "D": rope}, kv)
    k_rope = _rotary(g, f"{p}.rope_k", k_rope, (*r, "D"), {**rows, "D": rope})
    if getattr(step, "store_kv", False):
        g.store(c_kv, f"{p}.kv_cache.latent.append")
        g.store(k_rope, f"{p}.kv_cache.rope.append")

    heads_rows = {**rows, "Hq": heads}
    h = (*r, "Hq")
    q_latent = g.matmul(f"{p}.q_absorb", "BatchMatMul", {**heads_rows, "C": rank, "D": nope}, (*h, "C"),
                        chip(q_nope, *h, "D"), hbm(f"{p}.kv_b.key_weight", "Hq", "D", "C"))
    if step.decode:  # the latent is read once (here) and shared by scores and context of all heads
        cache = g.add(f"{p}.latent_cache", "Slice", OpKind.SLICE, {"B": step.batch, "S": step.keys, "C": rank},
                      ("B", "S", "C"), (hbm(f"{p}.kv_cache.latent", "B", "S", "C"),))
        latents, rope_keys = chip(cache, "B", "S", "C"), hbm(f"{p}.kv_cache.rope", "B", "S", "D")
    else:
        latents, rope_keys = chip(c_kv, "B", "S", "C"), chip(k_rope, "B", "S", "D")
    space = {**heads_rows, "S": step.keys}
    s_dims = tuple(space)
    scores_latent = g.matmul(f"{p}.scores_latent", "BatchMatMul", {**space, "C": rank}, s_dims,
                             chip(q_latent, *h, "C"), latents)
    scores_rope = g.matmul(f"{p}.scores_rope", "BatchMatMul", {**space, "D": rope}, s_dims,
                           chip(q_rope, *h, "D"), rope_keys)
    scores = g.binary(f"{p}.scores", "Add", space, chip(scores_latent, *s_dims), chip(scores_rope, *s_dims))
    scores = g.binary(f"{p}.scale", "Divide", space, chip(scores, *s_dims), g.constant("sqrt_head_dim"))
    if mask is not None:
        scores = g.binary(f"{p}.mask", "Add", space, chip(scores, *s_dims), mask)
    probs = softmax_operators(g, f"{p}.softmax", space, h, chip(scores, *s_dims))
    context = g.matmul(f"{p}.context", "BatchMatMul", {**heads_rows, "C": rank, "S": step.keys}, (*h, "C"),
                       chip(probs, *s_dims), latents)
    values = g.matmul(f"{p}.v_absorb", "BatchMatMul", {**heads_rows, "D": arch.v_head_dim, "C": rank},
                      (*h, "D"), chip(context, *h, "C"), hbm(f"{p}.kv_b.value_weight", "Hq", "C", "D"))
    return _linear(g, f"{p}.out", step.dot_rows, values, heads * arch.v_head_dim, arch.hidden, bias=False)


# ---------------------------------------------------------------- routing dependencies


def router_dependencies(graph: Graph) -> dict[int, tuple[int, ...]]:
    """Operator index -> indices of the operators producing its `routed_by` tensor (the
    routing decision its HBM loads wait for), for every operator that has one."""
    producers = graph.producers()
    deps = {}
    for i, op in enumerate(graph.ops):
        if op.routed_by is not None:
            if op.routed_by not in producers:
                raise ValueError(f"operator {op.name!r}: routed_by {op.routed_by!r} is produced by no operator")
            deps[i] = producers[op.routed_by]
    return deps


# ---------------------------------------------------------------- speculative preloads


@dataclass(frozen=True)
class RoutedLayer:
    """The routed-expert operators of one MoE layer: `router` = index of the operator
    producing their routing decision, `ops` their indices; `n_experts` (E), `top_k` (k),
    `tokens` (n) and `groups` (G, the expert dim X of the operators)."""

    router: int
    ops: tuple[int, ...]
    n_experts: int
    top_k: int
    tokens: int
    groups: int


def routed_layers(graph: Graph) -> list[RoutedLayer]:
    """The graph's MoE layers, in program order, read from its routed operators: E is the
    expert dim X of the routing decision, n the product of its other dims, G the X of the
    routed operators and k = G x C / n (their C token slots)."""
    producers = graph.producers()
    layers: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        if op.routed_by is not None and op.hbm_elements:
            layers.setdefault(op.routed_by, []).append(i)
    found = []
    for tensor, ops in layers.items():
        router = max(producers.get(tensor, ()), default=None)
        if router is None:
            raise ValueError(f"operator {graph.ops[ops[0]].name!r}: routed_by {tensor!r} is produced by no operator")
        select = {d.name: d.length for d in graph.ops[router].dims}
        dims = [{d.name: d.length for d in graph.ops[i].dims} for i in ops]
        if "X" not in select or any("X" not in d or "C" not in d for d in dims):
            raise ValueError(f"routed operators of {tensor!r} do not have the expert dims X and C of "
                             "elkopt.graph.moe; speculative preloads need them")
        tokens = math.prod(v for d, v in select.items() if d != "X")
        groups = dims[0]["X"]
        found.append(RoutedLayer(router, tuple(ops), select["X"], groups * dims[0]["C"] // tokens, tokens, groups))
    return sorted(found, key=lambda layer: layer.router)


def likeliest_order(routing: Routing | str | None, n_experts: int, top_k: int) -> list[float]:
    """Inclusion probabilities pi_e sorted from the likeliest expert down (ties in expert
    order): the order in which speculation preloads them."""
    return sorted(inclusion_probabilities(parse_routing(routing), n_experts, top_k), reverse=True)


def missed_experts(routing: Routing | str | None, n_experts: int, top_k: int, tokens: int, preloaded: int) -> float:
    """Expected experts read after the router when the `preloaded` likeliest were preloaded:
    ``sum over the other experts of 1 - (1 - pi_e)^tokens``; uniform
    ``(E - m)(1 - (1 - k/E)^n)``; 0 preloaded gives `expected_experts`."""
    pis = likeliest_order(routing, n_experts, top_k)
    return sum(1 - (1 - p) ** tokens for p in pis[preloaded:])


def max_speculation(layer: RoutedLayer) -> int:
    """The largest m `speculate` can represent: E when G = E, else G - 1 (module doc)."""
    return layer.n_experts if layer.groups == layer.n_experts else layer.groups - 1


@dataclass(frozen=True)
class Speculation:
    """What `speculate` did: `experts` preloaded before the router per MoE layer (the
    largest over layers), `experts_read` the expected experts read per layer (preloaded +
    missed, summed over layers and divided by `layers`), `waiting` whether any load still
    waits for a router."""

    experts: int
    layers: int
    experts_read: float
    waiting: bool


def speculate(graph: Graph, experts: int, routing: Routing | str | None = None) -> tuple[Graph, Speculation]:
    """The graph whose MoE layers preload the `experts` likeliest experts before their
    router (module doc), capped per layer at `max_speculation`; 0 returns the graph as it
    is. ValueError when the graph's expected experts do not match `routing` (the routing
    the graph was built with must be given)."""
    if experts < 0:
        raise ValueError(f"planning.moe_preload: cannot preload {experts} experts; give a count >= 0")
    layers = routed_layers(graph)
    if not layers:
        return graph, Speculation(0, 0, 0.0, False)
    ops = list(graph.ops)
    replaced: dict[int, tuple[Operator, ...]] = {}
    most, read, waiting = 0, 0.0, False
    for layer in layers:
        e, k, n, g = layer.n_experts, layer.top_k, layer.tokens, layer.groups
        expected = expected_experts(routing, e, k, n)
        built = graph.ops[layer.ops[0]].load_factor * g
        if not math.isclose(built, expected, rel_tol=1e-9):
            raise ValueError(f"the graph's MoE layer reads {built:.6g} experts per step, routing "
                             f"{parse_routing(routing).describe()!r} gives {expected:.6g}: pass the routing the "
                             "graph was built with (workload.routing)")
        m = min(experts, max_speculation(layer))
        most = max(most, m)
        missed = missed_experts(routing, e, k, n, m)
        read += m + missed
        waiting = waiting or m < e
        if m == 0:
            continue
        for i in layer.ops:
            op = ops[i]
            if m == e:  # G = E: every expert preloaded, nothing left to wait for
                replaced[i] = (replace(op, load_factor=1.0, routed_by=None),)
            else:
                replaced[i] = _speculative_parts(op, m, missed)
    new_ops = [part for i, op in enumerate(ops) for part in replaced.get(i, (op,))]
    spec = replace(graph, ops=tuple(new_ops)) if replaced else graph
    return spec, Speculation(most, len(layers), read / len(layers), waiting)


def _speculative_parts(op: Operator, preloaded: int, missed: float) -> tuple[Operator, Operator]:
    """`op` over G expert groups as its parts over the first `preloaded` groups (whole
    experts, no wait) and the other G - preloaded (reading `missed` experts' bytes, after
    the router)."""
    groups = next(d.length for d in op.dims if d.name == "X")
    parts = []
    for index, (suffix, length) in enumerate((("speculative", preloaded), ("missed", groups - preloaded))):
        dims = tuple(Dim("X", length) if d.name == "X" else d for d in op.dims)
        inputs = tuple(Operand(f"{x.tensor}.{suffix}", x.dims, x.storage) if x.storage == Storage.HBM else x
                       for x in op.inputs)
        # a miss-free layer (loads routing with unused experts) still needs a factor > 0: it rounds to 0 bytes
        factor = 1.0 if index == 0 else max(missed, 1e-12) / length
        parts.append(replace(op, name=f"{op.name}.{suffix}", dims=dims, inputs=inputs, part=(index, 2),
                             load_factor=factor, routed_by=None if index == 0 else op.routed_by))
    return parts[0], parts[1]


__all__ = [
    "ROUTING_FORMS",
    "RoutedLayer",
    "routed_layers",
    "likeliest_order",
    "missed_experts",
    "max_speculation",
    "Speculation",
    "speculate",
    "Routing",
    "parse_routing",
    "inclusion_probabilities",
    "expected_experts",
    "expert_groups",
    "experts_loaded",
    "add_moe_mlp",
    "add_latent_attention",
    "router_dependencies",
]
