"""Under pytest (`pytest --nbmake`, part of the README's test command) every notebook here
runs against the small fixture tables under tests/fixtures (written by
experiments/notebook_tables.py from measured sweeps), not against measured results:
`elkopt.analysis.results.load` reads only $ELKOPT_RESULTS when it is set, and the
notebooks' kernels inherit this process's environment."""

import os
from pathlib import Path

os.environ["ELKOPT_RESULTS"] = str(Path(__file__).resolve().parents[1] / "tests" / "fixtures")
