"""Operator-graph IR, architecture descriptions and the model zoo (problem data, no solver)."""

from .arch import Architecture
from .builders import build_decode_graph, build_forward_graph
from .ir import Dim, Graph, Operand, OpKind, Operator, Storage
from .zoo import ARCHITECTURES, UnknownArchitectureError, build_graph, get_architecture

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Dim",
    "Graph",
    "OpKind",
    "Operand",
    "Operator",
    "Storage",
    "UnknownArchitectureError",
    "build_decode_graph",
    "build_forward_graph",
    "build_graph",
    "get_architecture",
]
