"""What p and q are: nets, likelihoods p(x|z), priors p(z), guides q(z|x) and flows, the VAE."""
