"""Command line: ``python -m elkopt.run [group=option ...] [key=value ...]``.

Kept a few lines long on purpose: under a process launcher the globals of
`__main__` are pickled by value, so all work happens in `elkopt.app`.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from elkopt import app
from elkopt.config import config_path  # importing registers the config schemas


@hydra.main(config_path=config_path(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    status = app.run_job(cfg, hydra_config.runtime.output_dir, multirun)
    if status and not multirun:
        sys.exit(status)


if __name__ == "__main__":
    app.check_output_places(sys.argv[1:])
    main()
