"""Per-operator plan space: the reference cycle model, plan enumeration, plan tables."""
