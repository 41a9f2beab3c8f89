"""Where the time of one training step goes: pyvae's SVI step taken apart, next to the
hand-written PyTorch step of the same math.

Phases of ``svi.step(x)`` with ``Trace_ELBO`` (each timed alone, on the same minibatch):
  * params:   the ``pyro.module`` registrations of the model and guide (``pyro.param`` per
              tensor, through Pyro's effect handlers), with no computation;
  * forward:  ``Trace_ELBO.differentiable_loss``: trace the guide, replay the model, sum the
              log-densities (includes the registrations above);
  * backward: ``loss.backward()``;
  * optim:    the optimizer update (pyvae's ``JointOptim``: one fused torch Adam);
  * step:     the whole ``svi.step`` as the Trainer runs it (with ``jit=True`` too).
and the hand-written step (``torch_reference.TorchVAE``): forward, backward, Adam.

    python benchmarks/profile_step.py --arch burda --steps 300 --threads 1
    python benchmarks/profile_step.py --arch burda --torch-profiler   # + torch.profiler op table

Medians over rounds of ``--steps`` steps, milliseconds per step, process CPU time.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import pyro
import pyro.poutine as poutine
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyvae  # noqa: E402
from pyvae.optim import JointOptim  # noqa: E402
from torch_reference import TorchVAE  # noqa: E402

ARCHS = {"burda": dict(hidden=(200, 200), z_dim=50, batch=100),
         "tutorial": dict(hidden=(400,), z_dim=50, batch=128)}


def per_step_ms(fn, steps):
    fn()  # warm
    start = time.process_time()
    for _ in range(steps):
        fn()
    return 1e3 * (time.process_time() - start) / steps


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="burda")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--torch-profiler", action="store_true", help="also print torch.profiler's op table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # as the Trainer runs its hot loop (validate=False)
    arch = ARCHS[args.arch]
    x = torch.bernoulli(torch.rand(arch["batch"], 784, generator=torch.Generator().manual_seed(0)))

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = pyvae.VAE(784, arch["z_dim"], hidden=arch["hidden"])
    optim = JointOptim(torch.optim.Adam, {"lr": 1e-3})
    svi = SVI(vae.model, vae.guide, optim, Trace_ELBO())
    jit_svi = SVI(vae.model, vae.guide, optim, JitTrace_ELBO())
    elbo = Trace_ELBO()
    svi.step(x)
    jit_svi.step(x)

    def register():
        with poutine.trace():  # as inside SVI: the registrations are recorded as param sites
            pyro.module("encoder_body", vae.encoder_body)
            pyro.module("encoder", vae.encoder)
            pyro.module("decoder", vae.decoder)
            pyro.module("prior", vae.prior)
            pyro.module("likelihood", vae.likelihood)

    def forward():
        return elbo.differentiable_loss(vae.model, vae.guide, x)

    params = list(vae.parameters())
    torch_optim = torch.optim.Adam(params, lr=1e-3, foreach=True)

    ref = TorchVAE(784, arch["z_dim"], arch["hidden"])
    ref_optim = torch.optim.Adam(ref.parameters(), lr=1e-3)

    def ref_forward():
        return -ref.elbo(x).sum()

    def ref_step():
        ref_optim.zero_grad(set_to_none=True)
        ref_forward().backward()
        ref_optim.step()

    def backward_ms(forward_fn, steps):
        total = 0.0
        for _ in range(steps):
            for q in params + list(ref.parameters()):
                q.grad = None
            loss = forward_fn()
            start = time.process_time()
            loss.backward()
            total += time.process_time() - start
        return 1e3 * total / steps

    def adam_ms(steps):
        """The update alone, on one step's gradient; parameters restored afterwards."""
        saved = [q.detach().clone() for q in params]
        for q in params:
            q.grad = None
        forward().backward()
        ms = per_step_ms(torch_optim.step, steps)
        with torch.no_grad():
            for q, v in zip(params, saved):
                q.copy_(v)
                q.grad = None
        return ms

    rows = {k: [] for k in ("pyvae params", "pyvae forward", "pyvae backward", "adam update",
                            "pyvae step", "pyvae-jit step", "torch forward", "torch backward",
                            "torch step")}
    for _ in range(args.rounds):
        rows["pyvae params"].append(per_step_ms(register, args.steps))
        rows["pyvae forward"].append(per_step_ms(forward, args.steps))
        rows["pyvae backward"].append(backward_ms(forward, args.steps))
        rows["adam update"].append(adam_ms(args.steps))
        rows["pyvae step"].append(per_step_ms(lambda: svi.step(x), args.steps))
        rows["pyvae-jit step"].append(per_step_ms(lambda: jit_svi.step(x), args.steps))
        rows["torch forward"].append(per_step_ms(ref_forward, args.steps))
        rows["torch backward"].append(backward_ms(ref_forward, args.steps))
        rows["torch step"].append(per_step_ms(ref_step, args.steps))
    medians = {k: statistics.median(v) for k, v in rows.items()}
    info = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "pyro": pyro.__version__, "arch": args.arch,
            "batch": arch["batch"], "steps": args.steps, "rounds": args.rounds}
    print(f"ms per step (median of {args.rounds} rounds of {args.steps} steps, process CPU time)")
    for k, v in medians.items():
        print(f"  {k:<16} {v:7.3f}")
    print(f"  pyvae step / torch step     {medians['pyvae step'] / medians['torch step']:.3f}")
    print(f"  pyvae-jit step / torch step {medians['pyvae-jit step'] / medians['torch step']:.3f}")
    print(json.dumps({"info": info, "median_ms": medians}))
    if args.torch_profiler:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(50):
                svi.step(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
