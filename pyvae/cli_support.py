"""What ``pyvae train`` checks and prints beyond its flags: resume against the run's config,
data paths stored absolute, and one line per finished epoch."""
import os

from .config import ModelConfig
from .errors import ConfigError


def absolute_data_paths(data_cfg: dict, data_dir=None) -> dict:
    """A --data-file and a --data-dir stored as absolute paths (resume and evaluate then work
    from any directory; the data set's place is remembered)."""
    cfg = dict(data_cfg)
    if cfg.get("data_file"):
        cfg["data_file"] = os.path.abspath(cfg["data_file"])
    if data_dir:
        cfg["data_dir"] = os.path.abspath(os.path.expanduser(data_dir))
    return cfg


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
        from .models.likelihoods import bits_per_dim  # a code length: p(x|z) is a mass function

        bits_text = f" ({bits_per_dim(-record['valid_elbo'], trainer.vae.x_dim):.4f} bits/dim)"
    seconds = record.get("seconds", 0) + (record.get("valid_seconds") or 0)
    print(f"epoch {record['epoch']}: train {record.get('train_objective', 'ELBO')} "
          f"{record['train_elbo']:.2f}{valid_text} nats{bits_text}; {seconds:.1f} s", flush=True)
