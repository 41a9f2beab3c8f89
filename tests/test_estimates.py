"""pyvae.infer.estimates: the per-datapoint estimates and their standard errors."""
import math

import torch

from pyvae.infer.estimates import Estimate, delta_method_stderr


def test_delta_method_stderr_is_the_weights_sample_variance_over_k_mean_squared():
    # Var[log mean w] ~= Var(w) / (K mean(w)^2), with the sample variance (K - 1 in the
    # denominator), written through ESS = (sum w)^2 / sum w^2
    w = torch.rand(7, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64) ** 3
    k = w.shape[0]
    ess = w.sum(0) ** 2 / (w ** 2).sum(0)
    expected = (w.var(0, unbiased=True) / (k * w.mean(0) ** 2)).sqrt()
    torch.testing.assert_close(delta_method_stderr(ess, k), expected, rtol=1e-12, atol=0)
    # equal weights: no error; one weight carrying everything: sqrt((K - 1) / (K - 1)) = 1
    assert delta_method_stderr(torch.tensor([7.0, 1.0], dtype=torch.float64), 7).tolist() == [0.0, 1.0]
    assert math.isnan(delta_method_stderr(torch.tensor([1.0]), 1).item())  # one sample: none


def test_estimate_mean_and_its_stderr_over_independent_datapoints():
    e = Estimate(torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64),
                 torch.tensor([3.0, 4.0, 12.0], dtype=torch.float64), num_samples=5)
    assert e.mean == 3.0
    assert e.mean_stderr == 13.0 / 3  # sqrt(9 + 16 + 144) / N
    assert e.summary() == {"mean": 3.0, "stderr": 13.0 / 3, "num_samples": 5, "num_datapoints": 3}
