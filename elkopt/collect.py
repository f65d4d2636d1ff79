"""One results table per sweep: ``python -m elkopt.collect SWEEP_DIR``.

A sweep (``python -m elkopt.run --multirun ...``) writes one folder per job; a finished job
holds metrics.json, a failed one error.json. `collect` reads every job folder of a sweep
into one row and writes ``SWEEP_DIR/results.parquet`` (atomically):

- ``job``: the folder name (Hydra's job number), ``status``: ``ok``, ``error`` (error.json:
  ``error`` holds its message) or ``incomplete`` (neither file: still running, or killed);
- the job's config, flattened with dots (``config.chip.hbm_bytes_per_s``), from metrics.json
  or error.json, else from Hydra's ``.hydra/config.yaml``;
- every metric, nested sections flattened the same way (``breakdown.idle_ms``,
  ``simulation.simulated_ms``, ``bound.hbm_ms``, ``bound_by_part.kv_cache.hbm_ms``); lists
  are kept as JSON text.

A Hydra callback (`CollectCallback`, set in conf/config.yaml) runs it at the end of every
sweep; run it by hand on any old sweep folder. A sweep of one of the published figures'
experiments (``+experiment=fig19_hbm_sweep``, ...: `elkopt.analysis.figures`) also gets
its figures drawn into the folder as PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

#: Name of the table `collect` writes into the sweep folder.
RESULTS = "results.parquet"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys; lists and tuples as JSON text."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: those holding Hydra's .hydra folder or a result file,
    in job-number order."""
    found = [p for p in sweep_dir.iterdir() if p.is_dir() and
             any((p / name).exists() for name in (".hydra", "metrics.json", "error.json"))]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def job_row(job: Path) -> dict[str, Any]:
    """One job folder as a row (module docs)."""
    row: dict[str, Any] = {"job": job.name}
    metrics, error = job / "metrics.json", job / "error.json"
    broken = next((problem for path in (metrics, error) if (problem := _unreadable(path))), None)
    if broken:  # written atomically, so damaged afterwards: say which file, keep the job's row
        row["status"], row["error"], row["error_type"] = "error", broken, "UnreadableResult"
    elif metrics.exists():
        data = json.loads(metrics.read_text())
        row["status"], row["error"] = "ok", None
        row.update(flatten(data))
    elif error.exists():
        data = json.loads(error.read_text())
        row["status"], row["error"] = "error", data.get("error")
        row["error_type"] = data.get("type")
        row.update(flatten({"config": data.get("config", {})}))
    else:
        row["status"], row["error"] = "incomplete", None
        hydra_config = job / ".hydra" / "config.yaml"
        if hydra_config.exists():
            config = OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=False) or {}
            config.pop("hydra", None)
            row.update(flatten({"config": config}))
    return row


#: Exit status of a sweep in which a job failed (fail_on_job_error: true).
EXIT_JOBS_FAILED = 1


def _unreadable(path: Path) -> str | None:
    """What is wrong with a job's result file, or None when it is absent or a JSON object."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        return f"{path}: unreadable ({problem})"
    return None if isinstance(data, dict) else f"{path}: not a JSON object"


def collect(sweep_dir: str | os.PathLike, write: bool = True) -> pd.DataFrame:
    """The sweep's table, one row per job; written to SWEEP_DIR/results.parquet unless
    `write` is False."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise ValueError(f"sweep folder {str(sweep)!r} does not exist")
    table = pd.DataFrame([job_row(job) for job in job_dirs(sweep)])
    if write:
        tmp = sweep / f".{RESULTS}.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, sweep / RESULTS)
    return table


def describe(table: pd.DataFrame) -> str:
    """"3 jobs (1 error, 2 ok)"."""
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    return f"{len(table)} jobs ({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none'})"


def experiment_of(sweep_dir: Path) -> str | None:
    """The `+experiment=` a sweep ran, from the multirun.yaml Hydra writes into its folder."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices", default=None) or {}
    return choices.get("experiment")


def collect_and_draw(sweep_dir: Path, experiment: str | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """`collect`, then the figures of the sweep's experiment (read from its multirun.yaml
    when not given) drawn from the table into the sweep folder."""
    from elkopt.analysis.figures import draw  # imports matplotlib

    table = collect(sweep_dir)
    experiment = experiment or experiment_of(sweep_dir)
    figures = draw(experiment, table, Path(sweep_dir)) if experiment else []
    return table, figures


class CollectCallback(Callback):
    """Hydra callback: collect the sweep's table (and draw its figures) when a multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
        table, figures = collect_and_draw(sweep, experiment)
        log.info("collected %s into %s", describe(table), sweep / RESULTS)
        for path in figures:
            log.info("drew %s", path)
        failed = int((table["status"] != "ok").sum()) if len(table) else 0
        if failed:
            log.error("%d of %d jobs did not finish: see the status and error columns of %s",
                      failed, len(table), sweep / RESULTS)
            # Past Hydra's own error handling, so the sweep ends with a non-zero status.
            if OmegaConf.select(config, "fail_on_job_error", default=True):
                raise SystemExit(EXIT_JOBS_FAILED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elkopt.collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    try:
        table, figures = collect_and_draw(args.sweep_dir)
    except ValueError as error:
        print(f"elkopt.collect: error: {error}", file=sys.stderr)
        return 2
    print(f"{describe(table)} -> {args.sweep_dir / RESULTS}")
    for path in figures:
        print(f"figure -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
