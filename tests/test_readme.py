"""The README's commands work: every `python -m elkopt...` line of its shell blocks that
names no file of the reader's or of the repository's (no `...`, no `<placeholder>`, no graph
file, no test fixture) runs from a fresh folder and exits 0. Slow (a few minutes):
`pytest -m slow tests/test_readme.py`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: Commands that need a file or a cluster the reader brings.
NEEDS_INPUT = ("...", "<", "graph.json", "model.onnx", "tests/fixtures/", "hydra/launcher=slurm")


def readme_commands() -> list[str]:
    """The runnable elkopt commands of the README's ```bash blocks, in order, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command.startswith("python -m elkopt") and not any(part in command for part in NEEDS_INPUT):
                commands.append(command)
    return commands


def test_the_readme_names_its_commands():
    commands = readme_commands()
    assert "python -m elkopt.run model=llama2_70b chip=mesh_pod4 scheduler=basic" in commands
    assert any("--multirun" in c for c in commands) and any(c.startswith("python -m elkopt.collect") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    env = {**os.environ, "ELKOPT_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    for k, command in enumerate(readme_commands()):
        args = shlex.split(command)[1:]
        if args[:2] == ["-m", "elkopt.run"] and not any(a.startswith("hydra.sweep.dir") for a in args):
            args.append(f"hydra.sweep.dir=sweep{k}" if "--multirun" in args else f"hydra.run.dir=run{k}")
        if "--multirun" in args:  # overrides before the flag, as Hydra's parser wants them
            args = [a for a in args if a != "--multirun"] + ["--multirun"]
        run = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=1800)
        assert run.returncode == 0, f"{command}\n{run.stderr[-2000:]}"
