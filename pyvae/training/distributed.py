"""Multi-process data-parallel training: ``torchrun`` processes, PyTorch's DistributedDataParallel.

    torchrun --nproc_per_node N -m pyvae train ... --distributed

Each of the N processes (ranks) holds the whole VAE and the whole (resident) data set. Every step
draws the same global minibatch of ``batch_size`` datapoints on all ranks (the permutation comes
from the seed, as in a single process) and rank r trains on its contiguous slice of it. The model
and guide stay the Pyro functions of ``pyvae.vae``, trained through the objective's
``differentiable_loss``; while they run, the VAE's nets (``encoder_body``, ``encoder``,
``decoder`` and any ``prior``/``likelihood`` with parameters) are called through one ``DistributedDataParallel`` over all of them, so the backward pass
all-reduces their gradients and every rank takes the identical optimizer step.

Why the result equals one process with the global batch: Pyro's ``Trace_ELBO`` loss (and the IWAE
loss) is a *sum* over the datapoints of the batch, so the gradient of the global batch's loss is
the plain sum of the ranks' gradients, g = sum_r g_r. DDP's own reduction averages, g / N, so the
DDP carries a communication hook that sums instead (``_sum_allreduce``). Scaling each rank's
loss by N (``poutine.scale``) would give the same gradient for the ELBO, but not for the IWAE
objective, whose scale sits inside a logsumexp.

What is and is not equal to a single process on the same global batches: the data (order, and a
dynamic binarization, which every rank draws for the global batch before taking its rows), the
summed gradients, the optimizer state and the recorded train ELBO (the ranks' losses are summed)
are; the Monte-Carlo noise of z is drawn by each rank for its own rows (rank 0 continues the run's
random stream, rank r > 0 is reseeded per epoch from (seed, epoch, rank)), so a stochastic guide
gives an equally valid but different estimate than one process would.

``pyro.module("decoder", ...)`` sees the inner module's parameter names (``_Routed``), so the
param store, the optimizer state and the checkpoints are exactly those of a single-process run:
a run trained with N processes resumes with any other number, or without ``--distributed``.
"""
import contextlib
import datetime
import functools
import gc
import inspect
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import choose
from ..errors import ConfigError

BACKENDS = ("gloo", "nccl")
#: the VAE's submodules that the model and guide call; each one with trainable parameters is
#: wrapped in DDP while they run
SLOTS = ("encoder_body", "encoder", "decoder", "prior", "likelihood")
#: steps between the ranks' agreements on the loss, a stop signal and divergence (a collective
#: of three numbers; on the 2-core CI machine one costs about 0.8 ms, so not every step)
SYNC_EVERY = 10
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when the environment has what ``torchrun`` sets for each process."""
    return all(k in os.environ for k in _TORCHRUN_ENV)


def local_device(device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for any CUDA device, else ``device``.

    One process per GPU, as torchrun starts them: ``--device cuda`` means "this process's GPU".

    Args:
        device: a ``torch.device`` or its name; a CUDA device must have no index or
            LOCAL_RANK's.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        return device  # the caller's device check reports it
    if device.type != "cuda":
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.index is not None and device.index != local_rank:
        raise ConfigError(f"with --distributed give --device cuda (each process takes "
                          f"cuda:LOCAL_RANK), not {device}")
    return torch.device("cuda", local_rank)


def is_sync_step(step: int, start_step: int, steps: int) -> bool:
    """Whether the ranks agree after ``step`` (0-based) of an epoch of ``steps`` entered at
    ``start_step``: every ``SYNC_EVERY`` steps, and after the last.

    Args:
        step: the 0-based step just taken.
        start_step: the step the epoch was entered at (0, or a resumed run's step).
        steps: the steps of the epoch.
    """
    return (step + 1 - start_step) % SYNC_EVERY == 0 or step + 1 == steps


class Distributed:
    """This process's place in the process group, and the few collectives training needs.

    Build it with ``setup(device)`` (which initialises ``torch.distributed`` from torchrun's
    environment when no process group exists yet) rather than directly.

    Args:
        rank: this process's rank, 0 <= rank < world_size.
        world_size: the number of processes in the group.
        device: this process's device.
        backend: the process group's backend ("gloo" or "nccl").
        owns_group: whether ``close`` destroys the process group (``setup`` created it).
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, backend: str,
                 owns_group: bool = False):
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = torch.device(device)
        self.backend = backend
        self.owns_group = owns_group

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and shows the progress bar."""
        return self.rank == 0

    def __repr__(self):
        return (f"Distributed(rank={self.rank}, world_size={self.world_size}, "
                f"device={self.device}, backend={self.backend!r})")

    # ------------------------------------------------------------ collectives
    def all_reduce_sum(self, values: Sequence[float]) -> List[float]:
        """The elementwise sum over ranks of ``values`` (float64; on the device, as nccl needs).

        Args:
            values: this rank's numbers, the same count on every rank.
        """
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Set ``tensors`` on every rank to rank 0's values (as DDP's construction does).

        Args:
            tensors: tensors of the same shapes on every rank, overwritten in place.
        """
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t, src=0)

    def sum_gradients_(self, params: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over the ranks, in one all-reduce.

        For a Pyro model and guide of the user's, whose parameters live in Pyro's param store
        rather than in one module that DDP could wrap: the same summed gradient DDP's hook gives
        (``_sum_allreduce``), after the backward pass instead of overlapped with it. A parameter
        without a gradient this step counts as zero on that rank.

        Args:
            params: the parameters, in the same order on every rank; their ``grad`` is set.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g)
            offset += g.numel()

    def barrier(self) -> None:
        """Wait until every rank has reached this call."""
        if self.device.type == "cuda" and self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if ``setup`` created it."""
        if self.owns_group and dist.is_initialized():
            gc.collect()  # DDP reducers that only the collector can free go first (see release)
            dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------------ data
    def shard(self, n: int) -> Tuple[int, int]:
        """Rows [lo, hi) of n that this rank takes: contiguous, sizes differing by at most one
        (the split of ``torch.tensor_split``), rank 0 first.

        Args:
            n: the number of rows to split.
        """
        base, extra = divmod(int(n), self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def batch_shard(self, n: int, batch_size: int) -> Tuple[int, int]:
        """Rows [lo, hi) of n that this rank evaluates: a contiguous run of whole batches of
        ``batch_size`` (the batches split as ``shard`` splits rows), so every batch starts at
        the row it starts at in one process; empty where there are fewer batches than ranks.

        Args:
            n: the number of rows.
            batch_size: the rows of a batch (the last may be shorter).
        """
        lo, hi = self.shard(-(-int(n) // int(batch_size)))
        return min(lo * batch_size, n), min(hi * batch_size, n)

    def gather_rows(self, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Each of ``tensors`` (this rank's rows, first dimension) concatenated over the ranks in
        rank order, on every rank (``all_gather_object``: the CPU copies are pickled).

        Args:
            tensors: this rank's tensors, the same count and kinds on every rank.
        """
        parts = [None] * self.world_size
        dist.all_gather_object(parts, [t.detach().cpu() for t in tensors])
        # a rank without rows adds nothing, not even its empty tensor's dtype
        return [torch.cat([p[i] for p in parts if p[i].numel()] or [parts[0][i]])
                for i in range(len(tensors))]

    def check_batches(self, n: int, batch_size: int) -> None:
        """Every global batch must give each rank at least one datapoint (a Pyro plate of size 0
        is an error, and every rank must take part in every gradient all-reduce).

        Args:
            n: the training datapoints.
            batch_size: the global batch size.
        """
        last = n % batch_size
        if batch_size < self.world_size or 0 < last < self.world_size:
            size = batch_size if batch_size < self.world_size else last
            raise ConfigError(
                f"a batch of {size} datapoints cannot be split over {self.world_size} processes: "
                f"use a --batch-size of at least {self.world_size} whose remainder on the "
                f"{n} training datapoints is 0 or at least {self.world_size}")

    def shard_batch(self, data, index: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """This rank's rows of the global batch ``data.batch(index, generator)``.

        With dynamic binarization the Bernoulli draw is made for the whole global batch (with the
        step's seeded generator, as one process would) and then sliced, so that each datapoint is
        binarized exactly as in a single-process run; the extra draws cost little next to a step.
        Without it, only this rank's rows are gathered.

        Args:
            data: a ``TensorData`` (or any object with ``batch(index, generator)``).
            index: (batch_size,) row indices of the global batch.
            generator: the step's seeded generator of the binarization.
        """
        lo, hi = self.shard(index.shape[0])
        if getattr(data, "binarize", "none") == "dynamic":
            return data.batch(index, generator)[lo:hi]
        return data.batch(index[lo:hi], generator)

    def rank_seed(self, seed: int, epoch: int, step: int = 0) -> int:
        """The seed of rank ``self.rank``'s noise from (seed, epoch, step) on: distinct per rank,
        reproducible, and independent of when the run was stopped and resumed (numpy's
        ``SeedSequence`` mixes the four numbers); 32 bits, as ``pyro.set_rng_seed`` takes.

        Args:
            seed: the run's seed.
            epoch: the 0-based epoch.
            step: the step within the epoch.
        """
        return int(np.random.SeedSequence([int(seed) & 0xFFFF_FFFF, int(epoch), int(step),
                                           self.rank]).generate_state(1, np.uint32)[0])

    def wrap(self, vae: nn.Module) -> "DataParallelVAE":
        """``DataParallelVAE(vae, self)``: the VAE's nets synchronised over this group.

        Args:
            vae: a ``pyvae.VAE`` (or a module with its submodule slots).
        """
        return DataParallelVAE(vae, self)


def setup(device="cpu", backend: Optional[str] = None, timeout_s: Optional[float] = None) -> Distributed:
    """Join (or start) the process group for this process and return its ``Distributed``.

    If ``torch.distributed`` is already initialised (by the caller), that group is used;
    otherwise it is initialised from torchrun's environment variables (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) with ``backend``: by default gloo for CPU and nccl for
    CUDA, where each process uses ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``).

    Args:
        device: this process's device ("cuda" means ``cuda:LOCAL_RANK``).
        backend: "gloo" or "nccl" (None: gloo on the CPU, nccl on CUDA, or the existing
            group's).
        timeout_s: seconds a collective may wait for the other ranks before it fails (None:
            torch's default).
    """
    device = local_device(device)
    if backend is not None:
        choose(backend, BACKENDS, "backend")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} requested but CUDA is not available")
        torch.cuda.set_device(device)
    if dist.is_initialized():
        used = dist.get_backend()
        if backend is not None and backend != used:
            raise ConfigError(f"the process group already uses the {used} backend, not {backend}")
        return Distributed(dist.get_rank(), dist.get_world_size(), device, used)
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed")
    if not launched_by_torchrun():
        raise ConfigError("--distributed needs the environment torchrun sets up: run "
                          "`torchrun --nproc_per_node N -m pyvae train|evaluate ... --distributed`")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("the nccl backend needs --device cuda; use gloo on the CPU")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("this PyTorch build has no nccl backend; use --backend gloo")
    kwargs = {}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device  # binds the group to this GPU (eager nccl init)
    dist.init_process_group(backend=backend, **kwargs)
    return Distributed(dist.get_rank(), dist.get_world_size(), device, backend, owns_group=True)


@contextlib.contextmanager
def joined(distributed: bool, device="cpu", backend: Optional[str] = None):
    """``with joined(args.distributed, args.device, args.backend) as ctx``: ``ctx`` is None
    without ``distributed`` (where a ``backend`` is refused), else this process's
    ``Distributed`` from ``setup``, closed on the way out.

    Args:
        distributed: whether to join a process group at all.
        device: this process's device, as for ``setup``.
        backend: as for ``setup`` (only with ``distributed``).
    """
    if not distributed:
        if backend:
            raise ConfigError("--backend goes with --distributed")
        yield None
        return
    ctx = setup(device, backend)
    try:
        yield ctx
    finally:
        ctx.close()


def _sum_allreduce(process_group, bucket):
    """DDP communication hook: all-reduce a gradient bucket by summing, without DDP's default
    division by the world size. The loss is a sum over datapoints, so the gradient of the global
    batch's loss is the sum of the ranks' gradients (see the module docs)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


# buffers here are constants made at construction (index tensors, a standard normal's loc and
# scale), equal on all ranks: no broadcast of them at every forward (which would also be a
# collective inside the model, e.g. during rank-local validation)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                   else {"broadcast_buffers": False})


class _Nets(nn.Module):
    """The VAE's nets that have trainable parameters, as one module, so that one DDP (one
    reducer, one gradient all-reduce per bucket) covers them all; ``forward(name, *args)``
    calls the net ``name``. On a CPU the all-reduce's latency, not its size, dominates (about
    2 ms on the 2-core test machine, for 100 floats as for 500,000): one per step, not one per
    net."""

    def __init__(self, nets: Dict[str, nn.Module]):
        super().__init__()
        self.nets = nn.ModuleDict(nets)

    def forward(self, name: str, *args, **kwargs):
        return self.nets[name](*args, **kwargs)


class _Routed(nn.Module):
    """Stands in the VAE's slot for net ``name`` while the model and guide run: a call goes
    through the DDP, while ``named_parameters`` (what ``pyro.module`` registers) and other
    attributes are the net's own.

    ``pyro.module("decoder", m)`` registers ``m.named_parameters()`` as "decoder$$$<name>": the
    net's own names keep the param store, the optimizer state (keyed by those names) and
    checkpoints exactly those of a single process.
    """

    def __init__(self, ddp: DistributedDataParallel, name: str, net: nn.Module):
        super().__init__()
        # a tuple is a plain attribute for nn.Module, not submodules: this stand-in owns no
        # parameters of its own
        self.target = (ddp, name, net)
        self.train(net.training)

    def forward(self, *args, **kwargs):
        ddp, name, _ = self.target
        return ddp(name, *args, **kwargs)

    def named_parameters(self, *args, **kwargs):
        return self.target[2].named_parameters(*args, **kwargs)

    def __getattr__(self, attr):
        try:
            return super().__getattr__(attr)
        except AttributeError:
            if attr == "target":  # (not set yet)
                raise
            return getattr(self.target[2], attr)


class DataParallelVAE:
    """Routes a VAE's nets through ``DistributedDataParallel`` while its model and guide run.

    ``route(fn)`` returns ``fn`` (e.g. ``vae.model``) running with the VAE's submodule slots
    (``SLOTS``) holding stand-ins that call the nets through one DDP; outside those calls the VAE
    is untouched, so its ``state_dict``, ``encode`` and validation see the plain modules. (The
    slots are swapped per call because the model and guide look their nets up on the VAE, and
    a standing wrapper in a slot would rename the VAE's parameters in its ``state_dict``.) A net
    may be called several times per step (the VampPrior runs the encoder on its pseudo-inputs
    as well as the guide on x); autograd sums the uses before the gradient hook DDP waits on.

    DDP's default ``find_unused_parameters=False`` requires every wrapped parameter to get a
    gradient at every step: only submodules with trainable parameters are wrapped (a standard
    normal prior or a Bernoulli likelihood has none); every parameter of the library's
    components gets a gradient in each step of every objective. A custom component with
    parameters that do not makes DDP stop at the next step with an error naming them.

    Args:
        vae: a ``pyvae.VAE``: every trainable parameter must lie in one of its ``SLOTS``.
        ctx: this process's ``Distributed``.
    """

    def __init__(self, vae: nn.Module, ctx: Distributed):
        self.vae, self.ctx = vae, ctx
        nets, owner = {}, {}
        for name in SLOTS:
            module = getattr(vae, name, None)
            if module is None or not any(p.requires_grad for p in module.parameters()):
                continue
            for p in module.parameters():
                if id(p) in owner:
                    raise ConfigError(f"the VAE's {owner[id(p)]} and {name} share parameters; "
                                      "--distributed wraps each submodule once")
                owner[id(p)] = name
            nets[name] = module
        outside = [n for n, p in vae.named_parameters() if p.requires_grad and id(p) not in owner]
        if outside:
            raise ConfigError(f"--distributed synchronises the VAE's {', '.join(SLOTS)}; these "
                              f"parameters lie outside them: {', '.join(outside)}")
        self.ddp = None
        self.routed_nets: Dict[str, _Routed] = {}
        if nets:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            # (construction broadcasts rank 0's parameters, so all ranks start equal)
            # bucket_cap_mb given explicitly: since torch 2.5ish the first bucket is then as large
            # as the others (default: 1 MiB), so a VAE of up to 25 MiB of parameters is
            # all-reduced in one call per step; these nets are small, and a CPU all-reduce costs
            # its latency, so fewer calls beat overlapping them with the backward pass
            self.ddp = DistributedDataParallel(_Nets(nets), device_ids=device_ids, bucket_cap_mb=25,
                                               **_NO_BUFFER_SYNC)
            self.ddp.register_comm_hook(None, _sum_allreduce)
            self.routed_nets = {name: _Routed(self.ddp, name, net) for name, net in nets.items()}

    @contextlib.contextmanager
    def routed(self):
        """Within: ``vae.decoder`` etc. are the stand-ins that call the nets through DDP."""
        inner = {name: getattr(self.vae, name) for name in self.routed_nets}
        for name, stand_in in self.routed_nets.items():
            setattr(self.vae, name, stand_in)
        try:
            yield self.vae
        finally:
            for name, module in inner.items():
                setattr(self.vae, name, module)

    def release(self) -> None:
        """Drop the DDP wrapper (and its gradient reducer) now, while the process group lives.

        A reducer destroyed after ``destroy_process_group`` -- as garbage collection may do when
        it is left to the end of the process -- can abort the process. After ``release`` the
        routed functions run the plain nets, as a single process would.
        """
        self.routed_nets = {}
        self.ddp = None
        gc.collect()

    def route(self, fn):
        """``fn`` run inside ``routed()``: give ``route(vae.model)``, ``route(vae.guide)`` to the
        objective.

        Args:
            fn: a function of the VAE, e.g. ``vae.model`` or ``vae.guide``.

        Returns:
            a function with ``fn``'s arguments and result.
        """
        @functools.wraps(fn)
        def routed_fn(*args, **kwargs):
            with self.routed():
                return fn(*args, **kwargs)

        return routed_fn
