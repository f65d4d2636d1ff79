"""Finding and reading a sweep's results table, for the notebooks.

A figure notebook names its sweep (``fig17_latency``) and calls `load`, which takes the
first table that exists of:

1. ``$ELKOPT_RESULTS/<sweep>.parquet`` when the environment variable is set (the test
   suite points it at the small fixture tables under ``tests/fixtures``);
2. ``sweeps/<sweep>/results.parquet``: the sweep run here (``python -m elkopt.run
   --multirun +experiment=<sweep>``);
3. ``notebooks/data/<sweep>.parquet``: the table measured for the reproduction report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Environment variable naming a folder of ``<sweep>.parquet`` tables that overrides the rest.
ENV = "ELKOPT_RESULTS"


def checkout(start: Path | None = None) -> Path:
    """The elkopt checkout holding the current folder (a notebook runs in notebooks/):
    the nearest folder up from `start` (default: the current one) with both
    pyproject.toml and notebooks/; `start` itself when there is none."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


@dataclass(frozen=True)
class Results:
    """A sweep's table and where it came from (``kind``: env, sweep or data)."""

    table: pd.DataFrame
    path: Path
    kind: str

    def __repr__(self) -> str:
        ok = int((self.table["status"] == "ok").sum()) if "status" in self.table else len(self.table)
        return f"Results({self.kind}: {self.path}, {ok} of {len(self.table)} jobs ok)"


def candidates(sweep: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """Where `load` looks for the sweep's table, in order."""
    root = checkout() if root is None else root
    found = []
    if os.environ.get(ENV):
        found.append(("env", Path(os.environ[ENV]) / f"{sweep}.parquet"))
    found.append(("sweep", root / "sweeps" / sweep / "results.parquet"))
    found.append(("data", root / "notebooks" / "data" / f"{sweep}.parquet"))
    return found


def load(sweep: str, root: Path | None = None) -> Results:
    """The results table of `sweep` (see the module doc for where it is looked for).

    With $ELKOPT_RESULTS set, only that folder is read, so a test never falls back to
    other tables."""
    places = candidates(sweep, root)
    if os.environ.get(ENV):
        places = places[:1]
    for kind, path in places:
        if path.is_file():
            return Results(pd.read_parquet(path), path, kind)
    tried = ", ".join(str(p) for _, p in places)
    raise FileNotFoundError(f"no results table for sweep {sweep!r} (looked at {tried}); run "
                            f"`python -m elkopt.run --multirun +experiment={sweep}` first")


def finished(table: pd.DataFrame, need: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows of jobs that finished (``status == ok``); ValueError naming any column of
    `need` the table lacks, or when no job finished."""
    missing = [c for c in ("status", *need) if c not in table.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; is it a sweep's results.parquet "
                         f"(elkopt.collect) of the right experiment?")
    done = table[table["status"] == "ok"]
    if done.empty:
        counts = table["status"].value_counts().to_dict()
        raise ValueError(f"no finished job in the results table (status counts: {counts})")
    return done


def speedup_over(table: pd.DataFrame, group: list[str], by: str, at: float | None = None,
                 column: str = "latency_ms") -> pd.Series:
    """Per row, `column` at the row of its `group` whose `by` equals `at` (the group's
    smallest `by` when None) over the row's own `column`: the speed-up over that reference
    point (NaN where the group lacks it)."""
    groups = [table[g] for g in group]
    reference = table[by] == (table.groupby(groups)[by].transform("min") if at is None else at)
    base = table[column].where(reference).groupby(groups).transform("first")
    return base / table[column]


def save_figure(fig: Figure, name: str, results: Results, root: Path | None = None) -> Path | None:
    """Write `fig` to notebooks/figures/<name>.png when it was drawn from measured results
    (a sweep or notebooks/data), not from a test's fixture; the path written, or None."""
    if results.kind == "env":
        return None
    path = (checkout() if root is None else root) / "notebooks" / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def shrink(table: pd.DataFrame, columns: list[str], rows: pd.Series | None = None) -> pd.DataFrame:
    """A small fixture of a results table: `columns` (those present, plus job and status)
    of the `rows` selected (all if None)."""
    keep = [c for c in dict.fromkeys(["job", "status", *columns]) if c in table.columns]
    part = table if rows is None else table[rows]
    return part[keep].reset_index(drop=True)


__all__ = ["ENV", "Results", "candidates", "checkout", "finished", "load", "save_figure", "shrink", "speedup_over"]
