"""Analysis of result tables: the logic behind the notebooks (which stay thin)."""
