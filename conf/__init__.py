"""elkopt's Hydra configuration, installed as the package `elkopt.conf`.

This folder is top-level in the repository; pyproject.toml maps it to
`elkopt.conf` (package-dir) and ships the YAML files as package data, so
`@hydra.main(config_path="pkg://elkopt.conf")` finds it in a wheel too.
"""
