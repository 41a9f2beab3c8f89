"""Fitting a VAE: the training loop, checkpoints, data-parallel processes."""
