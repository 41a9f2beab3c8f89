"""Inference for any Pyro model/guide pair: objectives, importance-weighted evaluation, refinement.

Nothing here imports ``pyvae.training``.
"""
