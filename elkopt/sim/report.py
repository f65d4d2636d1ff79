"""What a simulated run tells a person: link utilisation, the hottest links and when they
were hot, SRAM occupancy per core class, a picture of the network, and metrics.

Utilisation of a link over an interval = bytes it carried / (bandwidth x interval); the
time resolution is the run's bins (`SimulatedRun.link_bins`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from elkopt.chip import Chip, Topology
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import sram_in_use
from elkopt.sim.network import EAST, NORTH, SOUTH, WEST, Network
from elkopt.sim.step import SimulatedRun

#: A link counts as hot in a time bin when it is busy at least this fraction of it.
HOT = 0.8


def bin_utilisation(run: SimulatedRun, network: Network) -> np.ndarray:
    """(bins, links): the fraction of each time bin each link was busy (the last bin only
    up to the end of the run)."""
    edges = np.arange(len(run.link_bins) + 1) * run.bin_cycles
    span = np.clip(np.minimum(edges[1:], run.latency_cycles) - edges[:-1], 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        util = run.link_bins / (span[:, None] * network.bandwidth[None, :])
    return np.nan_to_num(util, nan=0.0, posinf=0.0)


def link_utilisation(run: SimulatedRun, network: Network) -> np.ndarray:
    """Per link, the fraction of the whole run it was busy."""
    if run.latency_cycles <= 0:
        return np.zeros(network.n_links)
    return run.link_bytes / (network.bandwidth * run.latency_cycles)


def hottest_links(run: SimulatedRun, network: Network, clock_hz: float, top: int = 10) -> list[dict[str, Any]]:
    """The `top` busiest links over the run, each with when it was hot: the share of the
    run it spent at least `HOT` busy, the first and last such moments (ms), and its
    busiest time bin. Links equally busy (the cores of one plan, say) make one row: the
    lowest link id names it and `alike` counts them."""
    mean = link_utilisation(run, network)
    per_bin = bin_utilisation(run, network)
    ms = 1e3 / clock_hz
    level = np.round(mean, 6)
    rows = []
    for value in np.unique(level[level > 0])[::-1][:top]:
        same = np.flatnonzero(level == value)
        link = int(same[0])
        column = per_bin[:, link]
        hot = np.flatnonzero(column >= HOT)
        busiest = int(np.argmax(column))
        rows.append({
            "link": link,
            "name": network.link_name(link),
            "alike": len(same),
            "utilisation": float(mean[link]),
            "hot_share": float(min(len(hot) * run.bin_cycles / run.latency_cycles, 1.0)) if len(hot) else 0.0,
            "hot_from_ms": float(hot[0] * run.bin_cycles * ms) if len(hot) else None,
            "hot_to_ms": float(min((hot[-1] + 1) * run.bin_cycles, run.latency_cycles) * ms) if len(hot) else None,
            "peak_utilisation": float(column[busiest]),
            "peak_at_ms": float(busiest * run.bin_cycles * ms),
        })
    return rows


def core_classes(schedule: Schedule) -> list[tuple[int, int]]:
    """Ranges [first, last] of cores that hold the same operators' data: a plan uses cores
    0..cores_used-1 (logical cores; `Network.placement` puts them on a grid), so the
    distinct cores_used values cut the cores into classes whose SRAM occupancy is the same
    over time."""
    bounds = sorted({op.option.cores_used for op in schedule.ops})
    return [(lo, hi - 1) for lo, hi in zip([0, *bounds[:-1]], bounds)]


def sram_by_core_class(
    run: SimulatedRun, schedule: Schedule
) -> tuple[list[tuple[int, int]], list[tuple[np.ndarray, np.ndarray]]]:
    """Per core class, SRAM bytes in use on each of its cores as a step function (times,
    bytes) of the simulated run: hot bytes of the executing op and cold bytes of every op
    whose load has started and whose execution has not."""
    classes = core_classes(schedule)
    cores = np.array([op.option.cores_used for op in schedule.ops])
    hot = np.array([op.option.hot_bytes for op in schedule.ops], dtype=np.int64)
    cold = np.array([op.option.cold_bytes if op.has_load else 0 for op in schedule.ops], dtype=np.int64)
    profiles = []
    for first, _ in classes:
        uses = cores > first
        profiles.append(sram_in_use(run.exec_start, run.exec_end, run.load_start,
                                    np.where(uses, hot, 0), np.where(uses, cold, 0)))
    return classes, profiles


def simulation_metrics(run: SimulatedRun, schedule: Schedule, network: Network, chip: Chip,
                       analytic_cycles: float, top: int = 10) -> dict[str, Any]:
    """The simulation's part of metrics.json."""
    ms = 1e3 / chip.clock_hz
    util = link_utilisation(run, network)
    core_links = util[: network.n_core_links]
    classes, profiles = sram_by_core_class(run, schedule)
    return {
        "simulated_ms": run.latency_cycles * ms,
        "simulated_over_analytic": run.latency_cycles / analytic_cycles if analytic_cycles > 0 else None,
        "topology": str(network.topology),
        "links": network.n_links,
        "rate_changes": run.events,
        "mean_core_link_utilisation": float(core_links.mean()),
        "hbm_port_utilisation": float(util[network.controller_port].mean()),
        "hottest_links": hottest_links(run, network, chip.clock_hz, top),
        "sram_peak_by_core_class": [
            {"cores": f"{first}-{last}", "peak_bytes": int(used.max())}
            for (first, last), (_, used) in zip(classes, profiles)
        ],
    }


def draw_network(run: SimulatedRun, network: Network, chip: Chip, path: str | os.PathLike,
                 title: str = "") -> None:
    """A PNG: on a mesh or torus, heat maps of each core's east-west and north-south link
    utilisation over the run (the busier direction); on every topology, core-link and HBM
    port utilisation over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = network.topology is not Topology.ALL_TO_ALL
    fig, axes = plt.subplots(1, 3 if grid else 1, figsize=(16 if grid else 7, 4.5), squeeze=False)
    axes = axes[0]
    util = link_utilisation(run, network)
    if grid:
        per_core = util[: network.n_core_links].reshape(network.rows, network.cols, 4)
        for ax, pair, label in ((axes[0], (EAST, WEST), "east-west"), (axes[1], (SOUTH, NORTH), "north-south")):
            image = ax.imshow(per_core[:, :, list(pair)].max(axis=2), vmin=0, vmax=max(float(util.max()), 1e-9),
                              cmap="inferno", aspect="auto", interpolation="nearest")
            ax.set_title(f"{label} links, busy share of the run")
            ax.set_xlabel("column")
            ax.set_ylabel("row")
            fig.colorbar(image, ax=ax)
    ax = axes[-1]
    per_bin = bin_utilisation(run, network)
    core_links = per_bin[:, : network.n_core_links]
    used = core_links[:, util[: core_links.shape[1]] > 0]
    ms = 1e3 / chip.clock_hz
    times = (np.arange(len(per_bin)) + 0.5) * run.bin_cycles * ms
    inside = np.arange(len(per_bin)) * run.bin_cycles < run.latency_cycles
    if used.shape[1]:
        ax.plot(times[inside], used.mean(axis=1)[inside], label="core links, mean")
        ax.plot(times[inside], used.max(axis=1)[inside], label="core links, busiest")
    ax.plot(times[inside], per_bin[:, network.controller_port].mean(axis=1)[inside], label="HBM ports, mean")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("busy share of the bin")
    ax.set_title("utilisation over time")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = f"{os.fspath(path)}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)




#: Chrome trace process of the simulated run (the analytic timeline is process 1).
TRACE_PID = 2


def trace_events(run: SimulatedRun, schedule: Schedule, network: Network, chip: Chip,
                 op_names: list[str]) -> list[dict]:
    """Chrome trace events of the simulated run, as a process of its own: lanes
    "execute", "exchange", "HBM load" and (when the step writes to HBM) "HBM write" in
    simulated time, counters of core-link and HBM
    port utilisation per time bin, and SRAM per core per core class."""
    us = 1e6 / chip.clock_hz
    lanes = {"execute": 1, "exchange": 2, "HBM load": 3}
    written = ~np.isnan(run.write_end)
    if written.any():
        lanes["HBM write"] = 4
    events: list[dict] = [{"ph": "M", "pid": TRACE_PID, "name": "process_name",
                           "args": {"name": f"{chip.name}, simulated ({network.topology})"}}]
    for lane, tid in lanes.items():
        events.append({"ph": "M", "pid": TRACE_PID, "tid": tid, "name": "thread_name", "args": {"name": lane}})
        events.append({"ph": "M", "pid": TRACE_PID, "tid": tid, "name": "thread_sort_index",
                       "args": {"sort_index": tid}})

    def span(lane: str, name: str, start: float, end: float, args: dict) -> None:
        events.append({"ph": "X", "pid": TRACE_PID, "tid": lanes[lane], "name": name, "ts": start * us,
                       "dur": (end - start) * us, "args": args})

    for i, op in enumerate(schedule.ops):
        span("execute", op_names[i], run.exec_start[i], run.exec_end[i], {"op": i})
        if not np.isnan(run.exchange_start[i]):
            span("exchange", op_names[i], run.exchange_start[i], run.exec_end[i],
                 {"op": i, "cores": op.option.cores_used})
        if op.has_load and not np.isnan(run.load_end[i]):
            span("HBM load", op_names[i], run.load_start[i], run.load_end[i],
                 {"op": i, "hbm_bytes": op.hbm_bytes, "cold_bytes": op.option.cold_bytes})
        if written[i]:
            span("HBM write", op_names[i], run.write_start[i], run.write_end[i],
                 {"op": i, "write_bytes": op.write_bytes, "bytes_per_core": op.write_bytes / op.option.cores_used})
    per_bin = bin_utilisation(run, network)
    core_links = per_bin[:, : network.n_core_links]
    used = link_utilisation(run, network)[: core_links.shape[1]] > 0
    ports = per_bin[:, network.controller_port].mean(axis=1)
    for k in range(len(per_bin)):
        t = k * run.bin_cycles
        if t > run.latency_cycles:
            break
        mean = float(core_links[k, used].mean()) if used.any() else 0.0
        events.append({"ph": "C", "pid": TRACE_PID, "name": "link utilisation", "ts": t * us,
                       "args": {"core links, mean": mean, "HBM ports, mean": float(ports[k])}})
    classes, profiles = sram_by_core_class(run, schedule)
    for (first, last), (times, used_bytes) in zip(classes, profiles):
        for t, b in zip(times, used_bytes):
            events.append({"ph": "C", "pid": TRACE_PID, "name": f"SRAM per core, cores {first}-{last} (B)",
                           "ts": float(t) * us, "args": {"bytes": int(b)}})
    return events


__all__ = ["HOT", "TRACE_PID", "bin_utilisation", "core_classes", "draw_network", "hottest_links",
           "link_utilisation", "simulation_metrics", "sram_by_core_class", "trace_events"]
