"""Sane upper bounds on the sizes a user can ask for, checked before anything is allocated.

A typo such as ``--hidden 100000000000`` or ``--num-samples 1e12`` should be one clear line,
not minutes of work that end in an allocation failure (or never end).
"""
from typing import Iterable

from .errors import ConfigError

SEED_MAX = 2 ** 32 - 1  # NumPy's seeds, which Pyro sets with every seed, stop here
MAX = {
    "z_dim": 65_536,
    "hidden": 1_048_576,          # width of one layer
    "layers": 64,                 # hidden layers
    "flow_length": 1_000,
    "flow_hidden": 1_048_576,
    "rank": 65_536,
    "prior_components": 100_000,
    "particles": 100_000,
    "num_samples": 10_000_000,    # importance samples per datapoint
    "epochs": 1_000_000,
    "batch_size": 10_000_000,
    "refine_steps": 10_000_000,
    "refine_size": 10_000_000,    # datapoints refined
    "num_steps": 1_000_000,       # AIS steps (the papers use 5,000-10,000)
    "ais_steps": 1_000_000,
    "num_chains": 100_000,        # AIS chains per datapoint
    "ais_chains": 100_000,
    "leapfrog_steps": 10_000,
    "num_datapoints": 10_000_000,
    "max_datapoints": 1_000_000_000,
    "chunk_size": 10_000_000,     # samples per pass
    "k": 100_000,                 # particles of a bound
    "repeats": 1_000_000,         # gradient draws
    "test_size": 1_000_000_000,
    "num_points": 10_000_000,     # datapoints in a figure
}
#: weights of the encoder and decoder MLPs together (4 bytes each): 2**31 is 8 GiB
MAX_WEIGHTS = 2 ** 31


def check_at_most(name: str, value, limit=None) -> None:
    limit = MAX[name] if limit is None else limit
    if value is not None and int(value) > limit:
        raise ConfigError(f"{name.replace('_', ' ')} {value} is larger than the limit of {limit:,}")


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` must be an int (not a bool) >= ``minimum`` and, where ``MAX`` has ``name``, at
    most its limit: a number of samples, chains, steps, rows. Returns it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {wanted}, got {value!r}")
    if name in MAX:
        check_at_most(name, value)
    return value


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be an integer in [0, {SEED_MAX}], got {seed!r}")
    return seed


def check_net_sizes(x_dim: int, z_dim: int, hidden: Iterable[int]) -> None:
    """Widths and the number of MLP weights (encoder and decoder) of a VAE."""
    hidden = list(hidden)
    check_at_most("z_dim", z_dim)
    if len(hidden) > MAX["layers"]:
        raise ConfigError(f"{len(hidden)} hidden layers is more than the limit of {MAX['layers']}")
    for h in hidden:
        check_at_most("hidden", h)
    sizes = [x_dim, *hidden, z_dim]
    weights = 2 * sum(a * b for a, b in zip(sizes, sizes[1:]))
    if weights > MAX_WEIGHTS:
        raise ConfigError(f"the encoder and decoder would have about {weights:,} weights "
                          f"({weights * 4 / 2 ** 30:.0f} GiB), more than the limit of {MAX_WEIGHTS:,}")
