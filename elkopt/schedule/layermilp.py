"""The layer-periodic MILP (`planning.layer_milp`): when each of a layer's
loads is issued, each op's executing plan and the place of the heavy loads
in the issue order, in one model (`_build`); its MIP start from a schedule
(`_warm_start`), and the decisions read back (`_chosen`, `_windows`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyomo.environ as pyo

from elkopt.schedule.loadtiming import LayerLoads
from elkopt.schedule.schedule import Schedule


def _build(
    d: LayerLoads,
    periodic: bool = True,
    choices: Sequence[np.ndarray] | None = None,
    movable: Sequence[int] = (),
) -> pyo.ConcreteModel:
    """The layer-periodic MILP over the load windows and, with `choices`, the
    executing plan of each op.

    Per op k: c[k] its HBM-busy prefix, e[k] HBM work during its stall,
    V[k] the HBM work done when it starts (a position on the work axis where
    the layer's loads occupy [0, P]), wait[k] for its own load, stall[k].
    Binaries: full/through (the op is busy to its end), z (a busy period
    that ends inside op k ends at a load boundary: loads never pause), r
    (a load has been issued by op k: SRAM), q (issued before op k's nominal
    end), p (it has not finished), and
    w[h, k] the work of load h inside op k, bounded by the overlap of the
    two stretches of the work axis; stall >= exchange + sum rate * w - nominal.
    Minimises the layer's length. periodic=False: the ops are a whole graph
    instead (no layer before or after; the HBM starts at time 0, and op 0
    waits for its own load).

    choices[k]: rows (nominal cycles, exchange cycles, hot bytes) of the plans
    op k may execute in, the first its plan in `d`; binaries x[k, a] pick one.
    Alternatives must keep the op's preload layout (the loads do not change).
    Without choices every op keeps its plan.

    movable: loads (indices into d's loads) whose place in the issue order is
    chosen too: sequencing binaries y[g, h] (g before h, g < h) for every
    pair with a movable load, transitive over every triple; the other loads
    keep their order. A load's stretch of the work axis then starts at
    S[h] = sum of the durations of the loads before it.
    """
    K = len(d.nominal)
    loads = [int(k) for k in d.load_op]
    H = len(loads)
    if choices is None:
        choices = [np.array([[d.nominal[k], d.exchange[k], d.hot[k]]]) for k in range(K)]
    choices = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in choices]
    if len(choices) != K or any(len(c) == 0 for c in choices):
        raise ValueError(f"choices needs at least one plan for each of the {K} ops")
    per_layer = float(d.duration.sum())
    ends = np.cumsum(d.duration).tolist()  # L[h]: HBM work done when load h ends (d's order)
    starts = [0.0] + ends[:-1]
    # Big-M constants from the ranges they span: stalls are at most the
    # exchange; HBM work positions lie in [-P, 2P] plus stall work.
    stall_max = [max(0.0, float(c[:, 1].max())) for c in choices]
    nominal_max = [float(c[:, 0].max()) for c in choices]
    big_stall = float(sum(stall_max)) + 1.0
    big_work = 3.0 * per_layer + big_stall
    big = big_work
    m = pyo.ConcreteModel(name="layer")
    m.plans = pyo.Set(initialize=[(k, a) for k in range(K) for a in range(len(choices[k]))], dimen=2)
    m.x = pyo.Var(m.plans, domain=pyo.Binary)  # op k executes in plan a
    for k in range(K):
        if len(choices[k]) == 1:
            m.x[k, 0].fix(1)

    def pick(k: int, column: int):  # the chosen plan's nominal / exchange / hot of op k
        return pyo.quicksum(float(choices[k][a, column]) * m.x[k, a] for a in range(len(choices[k])))

    nominal = [pick(k, 0) for k in range(K)]

    # The issue order: S[h], E[h] where load h's stretch of the work axis
    # starts and ends (constants unless a movable load may pass it).
    movable = sorted(set(int(h) for h in movable))
    sequenced = [(g, h) for g, h in itertools.combinations(range(H), 2) if g in movable or h in movable]
    m.seq = pyo.Set(initialize=sequenced, dimen=2)
    m.y = pyo.Var(m.seq, domain=pyo.Binary)  # y[g, h]: load g (g < h) is issued before load h

    def before(g: int, h: int):
        if (min(g, h), max(g, h)) not in m.seq:
            return 1.0 if g < h else 0.0
        return m.y[g, h] if g < h else 1 - m.y[h, g]

    S = [starts[h] if not any(h in pair for pair in sequenced)
         else pyo.quicksum(float(d.duration[g]) * before(g, h) for g in range(H) if g != h)
         for h in range(H)]
    E = [S[h] + float(d.duration[h]) for h in range(H)]
    m.order = pyo.ConstraintList()
    for a, b, c in itertools.combinations(range(H), 3):
        if {a, b, c} & set(movable):  # transitivity: a before b before c means a before c
            m.order.add(before(a, b) + before(b, c) - before(a, c) <= 1)
            m.order.add(before(a, c) - before(a, b) - before(b, c) <= 0)
    m.c = pyo.Var(range(K), bounds=lambda _, k: (0.0, nominal_max[k]))  # HBM-busy prefix of op k
    m.e = pyo.Var(range(K), bounds=lambda _, k: (0.0, stall_max[k]))  # HBM work in op k's stall
    m.full = pyo.Var(range(K), domain=pyo.Binary)  # op k's nominal interval entirely HBM-busy
    m.through = pyo.Var(range(K), domain=pyo.Binary)  # ... and its stall too
    m.wait = pyo.Var(range(K), bounds=(0.0, per_layer))  # op k waiting for its load
    for k in range(K):
        if k not in loads:
            m.wait[k].fix(0.0)  # only an op whose data is loading waits
    work_range = (-per_layer, 2 * per_layer) if periodic else (0.0, per_layer)
    m.V = pyo.Var(range(K), bounds=work_range)  # HBM work done when op k starts
    m.stall = pyo.Var(range(K), bounds=lambda _, k: (0.0, stall_max[k]))

    def Y(k):  # HBM work done at the end of op k's nominal interval
        return m.V[k] + m.c[k]

    def X(k):  # ... and at the end of its busy prefix (the stall included)
        return m.V[k] + m.c[k] + m.e[k]

    m.flow = pyo.ConstraintList()
    for k in range(K):
        if len(choices[k]) > 1:
            m.flow.add(pyo.quicksum(m.x[k, a] for a in range(len(choices[k]))) == 1)
        m.flow.add(m.c[k] <= nominal[k])
        m.flow.add(m.c[k] >= nominal[k] - nominal_max[k] * (1 - m.full[k]))
        m.flow.add(m.through[k] <= m.full[k])
        m.flow.add(m.e[k] <= m.stall[k])
        m.flow.add(m.e[k] <= stall_max[k] * m.full[k])
        m.flow.add(m.e[k] >= m.stall[k] - stall_max[k] * (1 - m.through[k]))
        if k + 1 < K:
            m.flow.add(m.V[k + 1] == X(k) + m.wait[k + 1])
        elif periodic:
            m.flow.add(m.V[0] + per_layer == X(k) + m.wait[0])
    if not periodic:
        m.flow.add(m.V[0] == m.wait[0])  # the HBM runs from time 0
    # an op starts once its data is loaded, and waits only while its own load
    # is still running: then its start is exactly that load's end
    m.waiting = pyo.Var(loads, domain=pyo.Binary)
    for h, k in enumerate(loads):
        m.flow.add(m.V[k] >= E[h])
        m.flow.add(m.wait[k] <= per_layer * m.waiting[k])
        m.flow.add(m.V[k] <= E[h] + 3 * per_layer * (1 - m.waiting[k]))

    # A busy period ends inside op k (not through) only where a load ends:
    # loads are never paused. Candidate boundaries: the end of any load that
    # may have started by op k (this layer's, the previous layer's and, in
    # steady state, the next layer's), or 0 (nothing loaded yet).
    cands = []  # (op, boundary id); fixed boundaries closer than a cycle are merged
    point_of: dict[tuple[int, int], float] = {}  # the boundary in d's order (warm start)
    point_expr: dict[tuple[int, int], Any] = {}  # ... and as the model places it
    for k in range(K):
        points = [(0.0, 0.0)]
        for h, kh in enumerate(loads):
            shifts = [0] if kh - k <= d.max_offset else []
            if periodic:
                shifts += [-1] + ([1] if kh + K - k <= d.max_offset else [])
            points += [(ends[h] + x * per_layer, E[h] + x * per_layer) for x in shifts]
        fixed = sorted(value for value, expr in points if isinstance(expr, float))
        kept: list[tuple[float, Any]] = []
        for x in fixed:
            if not kept or x - kept[-1][0] >= 1.0:
                kept.append((x, x))
        kept += [(value, expr) for value, expr in points if not isinstance(expr, float)]
        for b, (value, expr) in enumerate(kept):
            cands.append((k, b))
            point_of[k, b] = value
            point_expr[k, b] = expr
    m.cands = pyo.Set(initialize=cands, dimen=2)
    m.z = pyo.Var(m.cands, domain=pyo.Binary)
    m.align = pyo.ConstraintList()
    for k in range(K):
        mine = [c for c in cands if c[0] == k]
        m.align.add(pyo.quicksum(m.z[c] for c in mine) == 1 - m.through[k])
        for c in mine:
            m.align.add(X(k) - point_expr[c] <= big * (1 - m.z[c]))
            m.align.add(point_expr[c] - X(k) <= big * (1 - m.z[c]))

    # SRAM: a load counts from the op during which it starts until its own op.
    # Tiny loads (a few bytes per core, a few cycles) are not tracked: their
    # bytes are reserved throughout, and their work is the `ignored` slack.
    tiny = [h for h in range(H) if d.duration[h] < 16.0 and d.cold[h] <= 1024.0]
    reserve = 2.0 * float(sum(d.cold[h] for h in tiny))
    held = []
    for h, kh in enumerate(loads):
        if h in tiny:
            continue
        for k in range(K):
            if k < kh and kh - k <= d.max_offset:
                held.append((h, k, 0, S[h]))
            if periodic and kh + K - k <= d.max_offset:
                held.append((h, k, 1, S[h] + per_layer))
    m.held = pyo.Set(initialize=[x[:3] for x in held], dimen=3)
    m.r = pyo.Var(m.held, domain=pyo.Binary)
    m.sram = pyo.ConstraintList()
    for h, k, nxt, point in held:
        m.sram.add(X(k) - point <= big * m.r[h, k, nxt])
    for h, kh in enumerate(loads):  # never earlier than max_offset ops ahead
        for k in range(K):
            early = k < kh and kh - k > d.max_offset
            if early or (periodic and k >= kh and kh + K - k > d.max_offset):
                point = S[h] + (per_layer if k >= kh else 0.0)
                m.sram.add(X(k) <= point)
    for k in range(K):
        terms = [float(d.cold[h]) * m.r[h, kk, nxt] for (h, kk, nxt, _) in held if kk == k]
        if terms:
            m.sram.add(pick(k, 2) + pyo.quicksum(terms) <= d.sram - reserve)

    # Which load's work fills op k's busy prefix: w <= the overlap of [V_k, X_k]
    # with the load's stretch [S, S + D] of the work axis (r: started by X_k,
    # p: not finished at V_k); the w of op k add up to its prefix, so each is
    # the overlap exactly, and the op's interconnect load is sum rate * w.
    ignored = float(sum(d.duration[h] for h in tiny))
    pairs = [(h, k, nxt) for (h, k, nxt, _) in held]
    m.pairs = pyo.Set(initialize=pairs, dimen=3)
    m.p = pyo.Var(m.pairs, domain=pyo.Binary)
    m.q = pyo.Var(m.pairs, domain=pyo.Binary)  # started before op k's nominal end
    m.w = pyo.Var(m.pairs, bounds=lambda _, h, k, nxt: (0.0, float(d.duration[h])))
    m.share = pyo.ConstraintList()
    for h, k, nxt in pairs:
        begin = S[h] + nxt * per_layer
        end = E[h] + nxt * per_layer
        D = float(d.duration[h])
        m.share.add(Y(k) - begin <= big * m.q[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= D * m.q[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= Y(k) - begin + big * (1 - m.q[h, k, nxt]))
        m.share.add(end - m.V[k] <= big * m.p[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= D * m.p[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= end - m.V[k] + big * (1 - m.p[h, k, nxt]))
    for k in range(K):
        mine = [c for c in pairs if c[1] == k]
        filled = pyo.quicksum(m.w[c] for c in mine)
        m.share.add(filled <= m.c[k])
        m.share.add(filled >= m.c[k] - ignored)
        busy = pyo.quicksum(float(d.rate[c[0]]) * m.w[c] for c in mine)
        m.share.add(m.stall[k] >= pick(k, 1) + busy - nominal[k])

    m.T = pyo.Expression(expr=pyo.quicksum(nominal[k] + m.stall[k] + m.wait[k] for k in range(K)))
    m.obj = pyo.Objective(expr=m.T, sense=pyo.minimize)
    m.ends = ends
    m.starts = starts
    m.S = S
    m.point_of = point_of
    m.per_layer = per_layer
    return m


def _warm_start(model, d: LayerLoads, schedule: Schedule, timeline, first: int) -> None:
    """Set the binaries (and the flows) from the starting schedule's layer at
    `first`: a MIP start that HiGHS completes with an LP, or discards."""
    K = len(d.nominal)
    loads = list(schedule.preload_order)
    ls = np.array([timeline.load_start[j] for j in loads])
    le = np.array([timeline.load_end[j] for j in loads])
    # HBM work of this layer's loads and later, at time t
    origin = loads.index(first + int(d.load_op[0])) if len(d.load_op) else 0
    done_before = float((le[:origin] - ls[:origin]).sum())

    def work(t: float) -> float:
        return float(np.clip(t - ls, 0.0, le - ls).sum()) - done_before

    for k in range(K):
        j = first + k
        start = float(timeline.exec_start[j])
        nominal_end = start + float(d.nominal[k])
        busy = float(np.clip(np.minimum(le, nominal_end) - np.maximum(ls, start), 0.0, None).sum())
        _set(model.V[k], work(start))
        _set(model.c[k], min(busy, float(d.nominal[k])))
        full = busy >= float(d.nominal[k]) - 1e-6
        _set(model.full[k], 1.0 if full else 0.0)
        stall_end = float(timeline.exec_end[j])
        in_stall = float(np.clip(np.minimum(le, stall_end) - np.maximum(ls, nominal_end), 0.0, None).sum())
        _set(model.e[k], in_stall if full else 0.0)
        through = full and in_stall >= stall_end - nominal_end - 1e-6
        _set(model.through[k], 1.0 if through else 0.0)
        previous_end = float(timeline.exec_end[j - 1]) if j else 0.0
        if not model.wait[k].fixed:
            wait = max(0.0, start - previous_end)
            _set(model.wait[k], wait)
            _set(model.waiting[k], 1.0 if wait > 1e-9 else 0.0)
        _set(model.stall[k], float(timeline.stall[j]))
    for k, a in model.plans:
        _set(model.x[k, a], 1.0 if a == 0 else 0.0)
    for g, h in model.seq:
        _set(model.y[g, h], 1.0)  # the order of d
    for c in model.cands:
        _set(model.z[c], 0.0)
    for k in range(K):
        if model.through[k].value > 0.5:
            continue
        x = model.V[k].value + model.c[k].value + model.e[k].value
        best = min((c for c in model.cands if c[0] == k), key=lambda c: abs(x - model.point_of[c]))
        _set(model.z[best], 1.0)
    for h, k, nxt in model.held:
        x = model.V[k].value + model.c[k].value + model.e[k].value
        point = model.starts[h] + nxt * model.per_layer
        _set(model.r[h, k, nxt], 1.0 if x > point + 1e-6 else 0.0)
    for h, k, nxt in model.pairs:
        v, x = model.V[k].value, model.V[k].value + model.c[k].value
        lo, hi = model.starts[h] + nxt * model.per_layer, model.ends[h] + nxt * model.per_layer
        _set(model.p[h, k, nxt], 1.0 if hi > v + 1e-6 else 0.0)
        _set(model.q[h, k, nxt], 1.0 if x > lo + 1e-6 else 0.0)
        _set(model.w[h, k, nxt], max(0.0, min(x, hi) - max(v, lo)))


def _chosen(model, K: int) -> list[int]:
    """Per op of the layer, the index of the plan the MILP picked."""
    picked = [0] * K
    for k, a in model.plans:
        if pyo.value(model.x[k, a]) > 0.5:
            picked[k] = a
    return picked


def _set(var, value: float) -> None:
    """Set a start value, clipped into the variable's bounds (floating-point
    noise can put it a hair outside)."""
    if var.fixed:
        return
    if var.lb is not None:
        value = max(value, var.lb)
    if var.ub is not None:
        value = min(value, var.ub)
    var.set_value(value)


def _windows(model, d: LayerLoads, periodic: bool = True) -> np.ndarray:
    """Per load of the layer: how many ops before its own it is issued
    (0: when the op before it ends), from where its HBM work starts."""
    K = len(d.nominal)
    V = [pyo.value(model.V[k]) for k in range(K)]
    X = [V[k] + pyo.value(model.c[k]) + pyo.value(model.e[k]) for k in range(K)]
    offsets = np.zeros(len(d.load_op), dtype=np.int64)
    tol = 1e-6 * max(1.0, model.per_layer)
    for h, kh in enumerate(int(k) for k in d.load_op):
        begin = float(pyo.value(model.S[h]))  # where the model placed it in the order
        offset = 0
        # ops of this layer before kh, then the previous layer's (work shifted by one layer)
        for back in range(1, d.max_offset + 1):
            if not periodic and back > kh:
                break
            k = (kh - back) % K
            shift = 0.0 if kh - back >= 0 else model.per_layer
            if X[k] - shift > begin + tol and V[k] - shift <= begin + tol:
                offset = back
                break
        offsets[h] = offset
    return offsets
