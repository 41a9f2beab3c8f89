"""The torch device a command or a class is asked to run on, checked once."""
import torch

from .errors import ConfigError


def resolve_device(device) -> torch.device:
    """``torch.device(device)``, or ConfigError (unknown name, CUDA absent).

    Args:
        device: a ``torch.device`` or its name ("cpu", "cuda", "cuda:1", ...).
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:  # (torch's TypeError lists its signatures, a line each)
        raise ConfigError(f"bad device {device!r}: {str(e).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available")
    return device
