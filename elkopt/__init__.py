"""elkopt: execution planning for inter-core connected AI chips."""

__version__ = "0.1.0"
