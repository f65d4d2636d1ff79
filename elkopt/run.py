"""Command line: ``python -m elkopt.run [group=option ...] [key=value ...]``.

Kept a few lines long on purpose: under a process launcher the globals of
`__main__` are pickled by value, so all work happens in `elkopt.app`.
"""

import sys

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
    status = app.main(run_config, hydra_config.runtime.output_dir)
    # A multirun keeps going past a bad job; its error.json records the failure.
    if status and hydra_config.mode == RunMode.RUN:
        sys.exit(status)


if __name__ == "__main__":
    main()
