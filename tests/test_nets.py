import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyvae
from pyvae import ConfigError, Trainer
from pyvae.data import TensorData
from pyvae.nets import ConvDecoder, ConvEncoder, image_shape_for


@pytest.mark.parametrize("shape, features", [((1, 28, 28), 64 * 7 * 7), ((3, 32, 32), 128 * 4 * 4)])
def test_conv_encoder_shapes_with_leading_batch_dims(shape, features):
    enc = ConvEncoder(shape)
    x_dim = shape[0] * shape[1] * shape[2]
    assert enc.out_dim == features
    assert enc(torch.rand(2, 3, x_dim)).shape == (2, 3, features)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_decoder_output_layout(shape):
    x_dim = shape[0] * shape[1] * shape[2]
    dec = ConvDecoder(5, shape, hidden=(16,), pixel_params=2, extra_params=1)
    assert dec.out_dim == 2 * x_dim + 1
    z = torch.randn(4, 6, 5)  # (particles, batch, z_dim)
    out = dec(z)
    assert out.shape == (4, 6, 2 * x_dim + 1)
    # the output is the flattened (pixel_params, C, H, W) map followed by the per-image extras
    flat = z.reshape(-1, 5)
    hidden = dec.mlp(flat)
    maps = dec.net(dec.to_map(hidden).reshape(-1, *dec.start_shape))
    assert maps.shape == (24, 2 * shape[0], shape[1], shape[2])
    assert torch.allclose(out.reshape(24, -1)[:, :x_dim], maps[:, :shape[0]].reshape(24, -1), atol=1e-6)
    assert torch.allclose(out.reshape(24, -1)[:, -1:], dec.extra(hidden), atol=1e-6)


def test_image_shape_inference_and_errors():
    assert image_shape_for(784) == (1, 28, 28) and image_shape_for(3072) == (3, 32, 32)
    assert image_shape_for(64, (8, 8)) == (1, 8, 8)
    with pytest.raises(ConfigError, match="pass image_shape"):
        image_shape_for(100)
    with pytest.raises(ConfigError, match="x_dim is 784"):
        image_shape_for(784, (3, 28, 28))
    with pytest.raises(ConfigError, match="too small or odd"):
        ConvEncoder((1, 5, 5))
    with pytest.raises(ConfigError, match="unknown arch 'rnn'; choose one of: mlp, conv"):
        pyvae.VAE(x_dim=784, arch="rnn")


def _blobs(n, shape, seed=0):
    """Tiny image data: a bright square at one of four places, on a dark background."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    x = torch.zeros(n, c, h, w)
    where = torch.randint(0, 4, (n,), generator=g)
    for i, k in enumerate(where.tolist()):
        r, q = (k // 2) * h // 2, (k % 2) * w // 2
        x[i, :, r:r + h // 2, q:q + w // 2] = 1.0
    return x


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_conv_vae_trains_on_28x28_without_nan(prior):
    pyro.set_rng_seed(0)
    x = _blobs(64, (1, 28, 28))
    vae = pyvae.VAE(x_dim=784, z_dim=4, hidden=(32,), arch="conv", activation="relu", prior=prior,
                    prior_components=3 if prior == "vamp" else None)
    history = Trainer(vae, epochs=2, batch_size=32, lr=1e-3, progress=False).fit(TensorData(x))
    assert all(math.isfinite(r["train_elbo"]) for r in history)
    assert history[-1]["train_elbo"] > history[0]["train_elbo"]
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith("encoder_body$$$") for n in names)
    assert any(n.startswith("decoder$$$net") for n in names)
    again = pyvae.VAE.from_config(vae.config)
    again.load_state_dict(vae.state_dict())


def test_conv_vae_on_32x32x3_with_discretized_logistic():
    x = (torch.randint(0, 256, (6, 3, 32, 32)).float() / 255)
    vae = pyvae.VAE(x_dim=3072, z_dim=4, hidden=(), arch="conv", activation="relu",
                    likelihood="discretized_logistic")
    assert vae.decoder.out_dim == 2 * 3072 and vae.encoder.x_dim == 2048
    loss = Trace_ELBO(num_particles=2, vectorize_particles=True).loss(vae.model, vae.guide, x.reshape(6, -1))
    assert math.isfinite(loss)
    # a discretized likelihood gives a code length: at most 8 bits/dim for an untrained model here
    assert 0 < pyvae.bits_per_dim(loss / 6, 3072) < 20
    assert vae.sample(2).shape == (2, 3072)


def test_conv_vae_with_gaussian_image_variance():
    vae = pyvae.VAE(x_dim=784, z_dim=3, hidden=(8,), arch="conv", likelihood="gaussian_image")
    assert vae.decoder.out_dim == 785
    x = torch.rand(4, 784)
    assert math.isfinite(Trace_ELBO().loss(vae.model, vae.guide, x))
