"""Solving Pyomo models: one facade, typed results."""

from elkopt.solve.highs import (
    DEDICATED_OPTIONS, MAX_THREADS, SolveResult, SolverOptions, SolveStatus, check_highs_options, describe_fallbacks, solve,
)

__all__ = ["DEDICATED_OPTIONS", "MAX_THREADS", "SolveResult", "SolverOptions", "SolveStatus",
           "check_highs_options", "describe_fallbacks", "solve"]
