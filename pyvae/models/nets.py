"""Plain ``torch.nn`` building blocks. Nothing here knows about Pyro or probability."""
from typing import Sequence

import torch
from torch import nn

from ..config import choose
from ..errors import ConfigError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def activation_class(name: str):
    """Look up an activation by name; unknown names raise a ConfigError listing the valid ones.

    Args:
        name: a key of ``ACTIVATIONS`` ("tanh", "relu", "elu", "softplus", "leaky_relu",
            "gelu", "silu").

    Returns:
        the ``torch.nn`` module class (``nn.Tanh``, ...), to be instantiated.
    """
    return ACTIVATIONS[choose(name, list(ACTIVATIONS), "activation")]


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``, an activation after every hidden layer.

    Accepts inputs with any number of leading batch dimensions (e.g. ``(particles, batch, in_dim)``).

    Args:
        in_dim: the size of the input's last dimension.
        hidden: the widths of the hidden layers, in order (empty: one linear map).
        out_dim: the size of the output's last dimension (no activation after it).
        activation: the nonlinearity after each hidden layer, a key of ``ACTIVATIONS``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh"):
        act = activation_class(activation)
        sizes = [int(in_dim), *[int(h) for h in hidden], int(out_dim)]
        if any(s <= 0 for s in sizes):
            raise ConfigError(f"layer sizes must be positive, got {sizes}")
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(act())
        super().__init__(*layers)
        self.in_dim, self.out_dim = sizes[0], sizes[-1]


def check_input_dim(x: torch.Tensor, expected: int, what: str = "x") -> None:
    """Raise a ConfigError unless ``x`` has shape ``(..., expected)``.

    Args:
        x: the tensor to check.
        expected: the required size of its last dimension.
        what: how the message names ``x``.
    """
    if x.dim() < 1 or x.shape[-1] != expected:
        raise ConfigError(
            f"{what} has shape {tuple(x.shape)} but the network expects (..., {expected})"
        )


def image_shape_for(x_dim: int, image_shape=None) -> tuple:
    """``(channels, height, width)`` of a flattened image of ``x_dim`` values.

    ``image_shape`` may be ``(H, W)`` (one channel) or ``(C, H, W)``; without it the two standard
    sizes are recognised: 784 -> (1, 28, 28) (MNIST family) and 3072 -> (3, 32, 32) (CIFAR-10).

    Args:
        x_dim: C * H * W, the number of values of a flattened image.
        image_shape: (H, W) or (C, H, W) whose product is ``x_dim``, or None.

    Returns:
        (C, H, W) as a tuple of ints.
    """
    if image_shape is None:
        known = {784: (1, 28, 28), 3072: (3, 32, 32)}
        if int(x_dim) not in known:
            raise ConfigError(f"cannot tell the image shape of x_dim={x_dim} for a conv net; "
                              "pass image_shape=(C, H, W) (known sizes: 784 -> 1x28x28, 3072 -> 3x32x32)")
        return known[int(x_dim)]
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ConfigError(f"image_shape must be (H, W) or (C, H, W) with positive sizes, got {image_shape}")
    if shape[0] * shape[1] * shape[2] != int(x_dim):
        raise ConfigError(f"image_shape {shape} has {shape[0] * shape[1] * shape[2]} values but x_dim is {x_dim}")
    return shape


def _halvings(height: int, width: int) -> int:
    """How many stride-2 convolutions the conv nets use: halve while both sides are even and >= 8
    (28 -> 14 -> 7: two; 32 -> 16 -> 8 -> 4: three)."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) >= 8:
        height, width, n = height // 2, width // 2, n + 1
    if n == 0:
        raise ConfigError(f"image {height}x{width} is too small or odd-sized for the conv nets "
                          "(need even sides >= 8)")
    return n


class ConvEncoder(nn.Module):
    """Image features for an encoder: ``(..., C*H*W) -> (..., out_dim)``.

    Stride-2 4x4 convolutions (padding 1) halve the image while both sides are even and >= 8, with
    32, 64, 128, ... channels and an activation after each; the last feature map is flattened.
    28x28x1: 32x14x14 -> 64x7x7 (3136 features); 32x32x3: 32x16x16 -> 64x8x8 -> 128x4x4 (2048).
    Accepts any number of leading batch dimensions.

    Args:
        image_shape: (C, H, W) of the images, sides even and >= 8.
        activation: the nonlinearity after each convolution, a key of ``ACTIVATIONS``.
        base_channels: the channels of the first convolution; each next one doubles them.
    """

    def __init__(self, image_shape, activation: str = "relu", base_channels: int = 32):
        super().__init__()
        act = activation_class(activation)
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        layers, channels = [], c
        for i in range(_halvings(h, w)):
            out = base_channels * 2 ** i
            layers += [nn.Conv2d(channels, out, kernel_size=4, stride=2, padding=1), act()]
            channels, h, w = out, h // 2, w // 2
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = c * self.image_shape[1] * self.image_shape[2], channels * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_dim(x, self.in_dim)
        lead = x.shape[:-1]
        features = self.net(x.reshape(-1, *self.image_shape))
        return features.reshape(*lead, self.out_dim)


class ConvDecoder(nn.Module):
    """The mirror of ``ConvEncoder``: ``(..., z_dim) -> (..., pixel_params*C*H*W + extra_params)``.

    z -> MLP(hidden) -> linear to the smallest feature map -> stride-2 4x4 transposed convolutions
    doubling the size back to H x W. The last one outputs ``pixel_params * C`` maps, laid out as
    ``pixel_params`` blocks of ``C*H*W`` values (so block j is what an MLP decoder's
    ``out[..., j*x_dim:(j+1)*x_dim]`` would be); ``extra_params`` per-image values (e.g. one
    log-scale) come from a linear head on the last hidden layer and are appended at the end.

    Args:
        z_dim: the size of z.
        image_shape: (C, H, W) of the images, sides even and >= 8.
        hidden: the widths of the MLP between z and the first feature map (empty: z itself
            is mapped linearly).
        pixel_params: distribution parameters per pixel value (1 for Bernoulli logits, 2 for
            a location and a scale).
        extra_params: per-image parameters appended after the pixel blocks.
        activation: the nonlinearity after each hidden layer and transposed convolution but
            the last.
        base_channels: the channels of the ``ConvEncoder`` this mirrors (the last feature map
            has ``base_channels * 2 ** (n - 1)`` for n halvings).
    """

    def __init__(self, z_dim: int, image_shape, hidden: Sequence[int] = (), pixel_params: int = 1,
                 extra_params: int = 0, activation: str = "relu", base_channels: int = 32):
        super().__init__()
        act = activation_class(activation)
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        n = _halvings(h, w)
        self.pixel_params, self.extra_params = int(pixel_params), int(extra_params)
        hidden = [int(s) for s in hidden]
        self.mlp = nn.Sequential(MLP(z_dim, hidden[:-1], hidden[-1], activation), act()) if hidden else nn.Identity()
        features = hidden[-1] if hidden else int(z_dim)
        channels = base_channels * 2 ** (n - 1)
        self.start_shape = (channels, h // 2 ** n, w // 2 ** n)
        self.to_map = nn.Linear(features, channels * self.start_shape[1] * self.start_shape[2])
        layers = [act()]
        for i in reversed(range(n)):
            out = base_channels * 2 ** (i - 1) if i > 0 else self.pixel_params * c
            layers.append(nn.ConvTranspose2d(channels, out, kernel_size=4, stride=2, padding=1))
            if i > 0:
                layers.append(act())
            channels = out
        self.net = nn.Sequential(*layers)
        self.extra = nn.Linear(features, self.extra_params) if self.extra_params else None
        self.in_dim = int(z_dim)
        self.out_dim = self.pixel_params * c * h * w + self.extra_params

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_input_dim(z, self.in_dim, "z")
        lead = z.shape[:-1]
        hidden = self.mlp(z.reshape(-1, self.in_dim))
        maps = self.net(self.to_map(hidden).reshape(-1, *self.start_shape))
        out = maps.reshape(maps.shape[0], -1)  # (pixel_params, C, H, W) blocks, channel-major
        if self.extra is not None:
            out = torch.cat([out, self.extra(hidden)], dim=-1)
        return out.reshape(*lead, self.out_dim)


ARCHS = ("mlp", "conv")
