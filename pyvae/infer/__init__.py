"""Inference for any Pyro model/guide pair: objectives and their gradient estimators,
importance-weighted evaluation, refinement, gradient diagnostics.

Nothing here imports ``pyvae.models`` (refine takes pyvae's flow families as a registry, filled by
the top level) or ``pyvae.training``.
"""
