"""pyvae.devices: the device a command or a class runs on, checked once (one ConfigError line)."""
import pytest
import torch

from pyvae.devices import resolve_device
from pyvae.errors import ConfigError


def test_a_device_name_or_object_is_a_torch_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device, message", [
    ("quantum", "bad device 'quantum': "), ("tpu:0", "bad device 'tpu:0': "), (None, "bad device None: ")])
def test_an_unknown_device_is_one_config_error_line(device, message):
    with pytest.raises(ConfigError) as err:
        resolve_device(device)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_cuda_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"device {name} requested but CUDA is not available"):
            resolve_device(name)
