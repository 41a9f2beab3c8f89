"""Inference for any Pyro model/guide pair: objectives and their gradient estimators,
importance-weighted evaluation, refinement, gradient diagnostics.

Nothing here imports ``pyvae.training``.
"""
