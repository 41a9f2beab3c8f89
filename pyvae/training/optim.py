"""A ``pyro.optim`` optimizer that updates all parameters with one torch optimizer.

``pyro.optim.Adam`` (``PyroOptim``) builds one torch optimizer per parameter tensor and steps them
in a Python loop, so a 6-layer VAE pays the optimizer's per-call overhead a dozen times per step.
``JointOptim`` is the same object to ``SVI`` -- it is called with the parameters of the traces
and keeps ``get_state``/``set_state`` keyed by Pyro parameter name, in the per-parameter format
``PyroOptim`` uses -- but holds a single torch optimizer over all of them, using the fused
(multi-tensor, single-kernel) implementation where torch offers it. It also refuses to apply
non-finite gradients, so a diverging step can never write NaN into the parameters.
"""
from typing import Dict, List, Optional

import torch

import pyro
from pyro.optim import PyroOptim

from ..errors import TrainingDiverged


def _supports_fused(constructor) -> bool:
    return constructor in (torch.optim.Adam, torch.optim.AdamW)


class JointOptim(PyroOptim):
    """One torch optimizer over every parameter SVI hands over.

    Args:
        optim_constructor: a torch optimizer class, e.g. ``torch.optim.Adam``.
        optim_args: its keyword arguments (``lr``, ``betas``, ...).
        clip_norm: clip each parameter's gradient to this norm, as ``pyro.optim``'s
            ``clip_args={"clip_norm": c}`` does (None: no clipping).
        check_finite: raise ``TrainingDiverged`` instead of stepping on a NaN/Inf gradient.
        fused: use torch's fused implementation when the optimizer has one (default: yes).
    """

    def __init__(self, optim_constructor, optim_args: dict, clip_norm: Optional[float] = None,
                 check_finite: bool = True, fused: bool = True):
        super().__init__(optim_constructor, dict(optim_args))
        self.clip_norm = clip_norm
        self.check_finite = check_finite
        self.fused = fused and _supports_fused(optim_constructor)
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._params: List[torch.Tensor] = []   # in optimizer order
        self._names: List[str] = []
        self._known = set()

    # -- SVI calls this with the parameters of the step's traces -------------------------------
    def __call__(self, params, *args, **kwargs) -> None:
        params = [p for p in params if p.grad is not None]
        new = [p for p in params if p not in self._known]
        if new:
            self._add(new)
        if len(params) != len(self._params):
            # update only what this step's traces touched, as PyroOptim does
            touched = set(params)
            for p in self._params:
                if p not in touched:
                    p.grad = None
        grads = [p.grad for p in params]
        if self.clip_norm is not None:
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, self.clip_norm)
        if self.check_finite and grads:
            norms = torch.stack(torch._foreach_norm(grads))
            if not bool(torch.isfinite(norms).all()):
                bad = [n for n, p in zip(self._names, self._params)
                       if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
                raise TrainingDiverged(f"non-finite gradient for {', '.join(bad)}")
        self.optimizer.step()
        for p in params:
            # cheaper than pyro.infer.util.zero_grads' zeros_like: SVI then finds nothing to zero
            p.grad = None

    def _add(self, new: List[torch.Tensor]) -> None:
        store = pyro.get_param_store()
        named = sorted(((store.param_name(p), p) for p in new), key=lambda t: t[0])
        names, params = [n for n, _ in named], [p for _, p in named]
        kwargs = dict(self.pt_optim_args)
        if self.fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
            kwargs["fused"] = True
        if self.optimizer is None:
            self.optimizer = self.pt_optim_constructor(params, **kwargs)
        else:
            self.optimizer.add_param_group({"params": params})
        self._params += params
        self._names += names
        self._known.update(params)
        waiting = {n: self._state_waiting_to_be_consumed.pop(n) for n in names
                   if n in self._state_waiting_to_be_consumed}
        if waiting:
            self._load_named(waiting)

    # -- state, keyed by parameter name like PyroOptim's -------------------------------------
    def get_state(self) -> Dict[str, dict]:
        state = dict(self._state_waiting_to_be_consumed)
        if self.optimizer is None:
            return state
        full = self.optimizer.state_dict()
        groups = {i: g for g in full["param_groups"] for i in g["params"]}
        for i, name in enumerate(self._names):
            group = {k: v for k, v in groups[i].items() if k != "params"}
            state[name] = {"state": {0: full["state"][i]} if i in full["state"] else {},
                           "param_groups": [dict(group, params=[0])]}
        return state

    def set_state(self, state_dict: Dict[str, dict]) -> None:
        known = {n: s for n, s in state_dict.items() if n in self._names}
        self._state_waiting_to_be_consumed.update(
            {n: s for n, s in state_dict.items() if n not in self._names})
        if known:
            self._load_named(known)

    def _load_named(self, named_states: Dict[str, dict]) -> None:
        full = self.optimizer.state_dict()
        for i, name in enumerate(self._names):
            if name in named_states and 0 in named_states[name]["state"]:
                full["state"][i] = named_states[name]["state"][0]
        self.optimizer.load_state_dict(full)

    def set_lr(self, lr: float) -> None:
        self.pt_optim_args["lr"] = lr
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
