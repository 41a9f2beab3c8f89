"""``pyvae train``: train a VAE (or resume a run), checking ``--resume`` against the run's config
and printing one line per finished epoch."""
import os

import pyro

from ..models.config import ModelConfig
from ..training.config import DataConfig, TrainConfig
from ..data import load_dataset, load_split, load_train_valid
from ..errors import ConfigError
from ..models.likelihoods import bits_per_dim
from ..models.vae import VAE
from ..training import distributed
from ..training.callbacks import as_callback
from ..training.rundir import check_new
from ..training.trainer import Trainer
from .data import recorded_data_config
from .flags import (DATA_FLAGS, MODEL_FLAGS, TRAIN_FLAGS, add_config_flags,
                    add_runtime_flags, given_flags, guide_flags, progress_of)


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="train a VAE by SVI", description=(
        "Train a VAE by stochastic variational inference; writes RUN_DIR/config.json, "
        "metrics.jsonl and checkpoint.pt."))
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    train.add_argument("--epochs", type=int, default=None, help=f"total epochs (default {TrainConfig.epochs})")
    train.add_argument("--tensorboard", action="store_true", help=(
        "write TensorBoard event files (train_elbo, valid_elbo, lr per epoch) to RUN_DIR/tensorboard"))
    train.add_argument("--distributed", action="store_true", help=(
        "data-parallel training over the processes torchrun starts: `torchrun --nproc_per_node N "
        "-m pyvae train ... --distributed` (DDP; --batch-size is the global batch)"))
    train.add_argument("--backend", choices=("gloo", "nccl"), default=None, help=(
        "with --distributed: gloo (default on the CPU) or nccl (default with --device cuda)"))
    add_runtime_flags(train, "device", "data-dir", "no-download", "threads", "no-progress", "debug")
    for config_fields in (MODEL_FLAGS, guide_flags(), TRAIN_FLAGS, DATA_FLAGS):
        add_config_flags(train, config_fields)
    train.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    if not args.distributed:
        if args.backend:
            raise ConfigError("--backend goes with --distributed")
        return train(args)
    ddp = distributed.setup(args.device, args.backend)
    try:
        # rank 0 alone fetches a missing data set, while the others wait, before anyone reads it
        fetch_error = None
        if ddp.is_main and not (args.resume or args.data_file or args.no_download):
            try:
                load_dataset(args.dataset or "mnist", "train", data_dir=args.data_dir, binarize="none")
            except ConfigError as e:
                fetch_error = e
        ddp.barrier()
        if fetch_error is not None:
            raise fetch_error
        return train(args, ddp)
    finally:
        ddp.close()


def train(args, ddp=None) -> int:
    given = {**given_flags(args, MODEL_FLAGS), **given_flags(args, guide_flags()), **given_flags(args, TRAIN_FLAGS),
             **given_flags(args, DATA_FLAGS)}
    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ConfigError("give either --out or --resume, not both")
        if args.overwrite:  # it would be ignored: a resumed run replaces nothing
            raise ConfigError("--overwrite goes with --out (it replaces a run); --resume "
                              "continues the run and replaces nothing")
        trainer = Trainer.resume(args.resume, epochs=args.epochs, device=args.device,
                                 progress=progress_of(args), num_threads=args.threads,
                                 distributed=args.distributed, tensorboard=args.tensorboard)
        check_resume_flags(args.resume, trainer, given)
        data_cfg = trainer.extra_config
    else:
        if not args.out:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        check_new(args.out, args.overwrite)  # before the data are loaded
        model = model_config(args)
        training = TrainConfig(**given_flags(args, TRAIN_FLAGS), num_threads=args.threads,
                               **({} if args.epochs is None else {"epochs": args.epochs}))
        training.refuse_options_of_other_losses(args.given)
        data = DataConfig(**given_flags(args, DATA_FLAGS), seed=training.seed)
        data_cfg = recorded_data_config(data, model.likelihood, args.data_dir)
        pyro.set_rng_seed(training.seed)  # the initial weights, too, follow --seed
        train_preview = load_split(data_cfg, "train", args.data_dir, not args.no_download)
        vae = VAE(config=model.replace(
            x_dim=train_preview.x_dim,
            image_shape=train_preview.image_shape if model.arch == "conv" else None))
        trainer = Trainer(vae, config=training, device=args.device, out=args.out,
                          overwrite=args.overwrite, progress=progress_of(args),
                          extra_config=data_cfg, distributed=args.distributed,
                          tensorboard=args.tensorboard)
    train_data, valid = load_train_valid(data_cfg, args.data_dir, not args.no_download)
    if ddp is None or ddp.is_main:  # with --distributed, rank 0 reports
        trainer.callbacks.append(as_callback(epoch_line))
    history = trainer.fit(train_data, valid)
    if history and (ddp is None or ddp.is_main):
        print(f"run in {trainer.out} ({history[-1]['epoch']} epochs)")
    return 0


def model_config(args) -> ModelConfig:
    """The model the flags describe: the model flags and those of the guide families."""
    return ModelConfig.from_dict({**given_flags(args, MODEL_FLAGS), **given_flags(args, guide_flags())})


def check_resume_flags(run_dir: str, trainer, given: dict) -> None:
    """Flags given with --resume must match the run's: a different value, or a flag the run does
    not record, is an error naming the flag; so are --epochs at or below the epochs done."""
    # a config written without "arch" had the default nets
    stored = {"arch": ModelConfig.arch, **(trainer.vae.config or {}), **trainer.extra_config,
              **trainer.config}
    for dest, value in given.items():
        flag = "--" + dest.replace("_", "-")
        if dest not in stored:
            raise ConfigError(f"{flag} is not recorded in {run_dir} (the run does not take it or "
                              "predates it), so it cannot be checked; drop it to resume")
        mine, theirs = value, stored[dest]
        if dest == "data_file":
            mine, theirs = os.path.abspath(value), theirs and os.path.abspath(theirs)
        if isinstance(mine, tuple):
            mine = list(mine)
        if mine != theirs:
            raise ConfigError(f"config mismatch on resume: {flag} {value} but the run has {stored[dest]}")
    done, epochs = len(trainer.history), trainer.config["epochs"]
    if done >= epochs:
        raise ConfigError(f"{run_dir} has already trained {done} of {epochs} epochs; pass "
                          f"--epochs N with N > {done} to train further")


def epoch_line(trainer, record) -> None:
    """One line per finished epoch: the objective, the validation ELBO, the time."""
    valid_text = "" if record["valid_elbo"] is None else f", valid ELBO {record['valid_elbo']:.2f}"
    bits_text = ""
    if record["valid_elbo"] is not None and getattr(trainer.vae.likelihood, "discrete", False):
        # a code length: p(x|z) is a mass function
        bits_text = f" ({bits_per_dim(-record['valid_elbo'], trainer.vae.x_dim):.4f} bits/dim)"
    seconds = record.get("seconds", 0) + (record.get("valid_seconds") or 0)
    print(f"epoch {record['epoch']}: train {record.get('train_objective', 'ELBO')} "
          f"{record['train_elbo']:.2f}{valid_text} nats{bits_text}; {seconds:.1f} s", flush=True)
