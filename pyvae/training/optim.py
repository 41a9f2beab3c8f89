"""One torch optimizer over all of a model's parameters, with optimizer state keyed by name.

The trainer steps a single torch optimizer (the fused, single-kernel implementation where
torch has one) over every trainable parameter. Its state is stored by parameter name in the
per-parameter format of ``pyro.optim.PyroOptim.get_state`` (``{name: {"state": {0: ...},
"param_groups": [...]}}``), so a checkpoint does not depend on the order of the parameters, and
runs saved by earlier versions of pyvae (which stepped through Pyro's SVI) resume exactly.

``JointOptim`` offers the same optimizer behind ``pyro.optim``'s interface, for code that drives
Pyro's ``SVI`` itself.
"""
from typing import Dict, List, Optional, Sequence

import torch

import pyro
from pyro.optim import PyroOptim

from ..errors import TrainingDiverged


def supports_fused(constructor) -> bool:
    return constructor in (torch.optim.Adam, torch.optim.AdamW)


def make_torch_optimizer(constructor, params: Sequence[torch.Tensor], args: dict,
                         fused: bool = True) -> torch.optim.Optimizer:
    """``constructor(params, **args)``, fused where torch implements it for these tensors."""
    args = dict(args)
    if fused and supports_fused(constructor) and all(
            p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        args["fused"] = True
    return constructor(list(params), **args)


def refuse_non_finite(names: Sequence[str], params: Sequence[torch.Tensor]) -> None:
    """Raise ``TrainingDiverged`` naming the parameters whose gradient holds a NaN or Inf.

    The check is torch's own ``error_if_nonfinite`` on the total gradient norm, so a finite step
    costs one norm computation and a diverging one never reaches the parameters.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    try:
        torch.nn.utils.get_total_norm(grads, error_if_nonfinite=True)
    except RuntimeError:
        bad = [n for n, p in zip(names, params)
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        raise TrainingDiverged(f"non-finite gradient for {', '.join(bad)}") from None


def clip_each(params: Sequence[torch.Tensor], clip_norm: Optional[float]) -> None:
    """Clip each parameter's gradient to norm ``clip_norm`` (as ``pyro.optim``'s clip_args)."""
    if clip_norm is not None:
        for p in params:
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, clip_norm)


def named_state(optimizer: Optional[torch.optim.Optimizer], names: Sequence[str]) -> Dict[str, dict]:
    """The optimizer's state per parameter name, in ``PyroOptim.get_state``'s format; ``names``
    lists the parameters in the optimizer's order."""
    if optimizer is None:
        return {}
    full = optimizer.state_dict()
    groups = {i: g for g in full["param_groups"] for i in g["params"]}
    out = {}
    for i, name in enumerate(names):
        group = {k: v for k, v in groups[i].items() if k != "params"}
        out[name] = {"state": {0: full["state"][i]} if i in full["state"] else {},
                     "param_groups": [dict(group, params=[0])]}
    return out


def load_named_state(optimizer: torch.optim.Optimizer, names: Sequence[str],
                     states: Dict[str, dict]) -> None:
    """Load per-name states (``named_state``'s format) into the optimizer's parameters."""
    full = optimizer.state_dict()
    for i, name in enumerate(names):
        if name in states and 0 in states[name]["state"]:
            full["state"][i] = states[name]["state"][0]
    optimizer.load_state_dict(full)


class JointOptim(PyroOptim):
    """One torch optimizer over every parameter SVI hands over, behind ``pyro.optim``'s interface.

    Args:
        optim_constructor: a torch optimizer class, e.g. ``torch.optim.Adam``.
        optim_args: its keyword arguments (``lr``, ``betas``, ...).
        clip_norm: clip each parameter's gradient to this norm (None: no clipping).
        check_finite: raise ``TrainingDiverged`` instead of stepping on a NaN/Inf gradient.
        fused: use torch's fused implementation when the optimizer has one (default: yes).
    """

    def __init__(self, optim_constructor, optim_args: dict, clip_norm: Optional[float] = None,
                 check_finite: bool = True, fused: bool = True):
        super().__init__(optim_constructor, dict(optim_args))
        self.constructor, self.args = optim_constructor, dict(optim_args)
        self.clip_norm = clip_norm
        self.check_finite = check_finite
        self.fused = fused
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.params: List[torch.Tensor] = []   # in optimizer order
        self.names: List[str] = []
        self.pending: Dict[str, dict] = {}     # states of parameters not seen yet

    def __call__(self, params, *args, **kwargs) -> None:
        params = [p for p in params if p.grad is not None]
        known = set(self.params)
        new = [p for p in params if p not in known]
        if new:
            self._add(new)
        if len(params) != len(self.params):
            # update only what this step's traces touched, as PyroOptim does
            touched = set(params)
            for p in self.params:
                if p not in touched:
                    p.grad = None
        clip_each(params, self.clip_norm)
        if self.check_finite:
            refuse_non_finite(self.names, self.params)
        self.optimizer.step()
        for p in params:
            # cheaper than pyro.infer.util.zero_grads' zeros_like: SVI then finds nothing to zero
            p.grad = None

    def _add(self, new: List[torch.Tensor]) -> None:
        store = pyro.get_param_store()
        named = sorted(((store.param_name(p), p) for p in new), key=lambda t: t[0])
        names, params = [n for n, _ in named], [p for _, p in named]
        if self.optimizer is None:
            self.optimizer = make_torch_optimizer(self.constructor, params, self.args, self.fused)
        else:
            self.optimizer.add_param_group({"params": params})
        self.params += params
        self.names += names
        waiting = {n: self.pending.pop(n) for n in names if n in self.pending}
        if waiting:
            load_named_state(self.optimizer, self.names, waiting)

    def get_state(self) -> Dict[str, dict]:
        return {**self.pending, **named_state(self.optimizer, self.names)}

    def set_state(self, state_dict: Dict[str, dict]) -> None:
        known = {n: s for n, s in state_dict.items() if n in self.names}
        self.pending.update({n: s for n, s in state_dict.items() if n not in self.names})
        if known:
            load_named_state(self.optimizer, self.names, known)

    def set_lr(self, lr: float) -> None:
        self.args["lr"] = lr
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr


__all__ = ["JointOptim", "make_torch_optimizer", "refuse_non_finite", "clip_each",
           "named_state", "load_named_state"]
