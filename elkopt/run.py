"""Command line: ``python -m elkopt.run [group=option ...] [key=value ...]``.

Kept a few lines long on purpose: under a process launcher the globals of
`__main__` are pickled by value, so all work happens in `elkopt.app`.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from elkopt import app
from elkopt.config import RunConfig, config_path  # importing registers the config schemas


@hydra.main(config_path=config_path(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_config: RunConfig = OmegaConf.to_object(cfg)
    hydra_config = HydraConfig.get()
    if hydra_config.mode == RunMode.RUN:
        status = app.main(run_config, hydra_config.runtime.output_dir)
        if status:
            sys.exit(status)
        return
    # A multirun keeps going past a failed job; its error.json records the failure (a
    # raised exception would stop the sweep's end-of-sweep callbacks, the collector).
    try:
        app.main(run_config, hydra_config.runtime.output_dir)
    except Exception as error:  # noqa: BLE001 - every failure becomes a result row
        app.record_crash(Path(hydra_config.runtime.output_dir), run_config, error)


if __name__ == "__main__":
    main()
