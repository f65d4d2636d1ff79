"""Solving Pyomo models: one facade, typed results."""

from elkopt.solve.highs import SolveResult, SolverOptions, SolveStatus, check_highs_options, solve

__all__ = ["SolveResult", "SolverOptions", "SolveStatus", "check_highs_options", "solve"]
