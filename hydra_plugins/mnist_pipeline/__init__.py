"""Registers the project's config schemas when Hydra scans its plugins.

DVC's compose step for `dvc exp run` (with `hydra.enabled`) imports nothing of the project; it
only scans `hydra_plugins` packages, adding the repo root to the import path first. Registering
here is what lets it validate `-S` overrides against the same schemas as `pipeline.train`.
"""

from pipeline.schema import register_schemas

register_schemas()
