"""Train a VAE on dynamically binarized MNIST, then draw its figures.

    python examples/train_mnist.py --epochs 1 --train-size 5000 --out runs/example-mnist

takes well under a minute on a laptop CPU; the defaults (10 epochs on all 50,000 training images)
reach a validation ELBO of about -112 nats. ``--data-file`` trains on an array file instead
(any (N, D) values in [0, 1]; see ``pyvae.data.load_array``).
"""
import argparse
import os

import pyro
import torch

import pyvae
from pyvae import plots
from pyvae.data import load_split
from pyvae.data import TensorData


def first(data: TensorData, n):
    """The first n datapoints of a data set (all of them when n is None)."""
    if n is None or n >= len(data):
        return data
    labels = None if data.labels is None else data.labels[:n]
    out = TensorData(data.x[:n], labels, binarize=data.binarize, name=data.name)
    out.image_shape = data.image_shape
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--hidden", default="200,200")
    parser.add_argument("--guide", default="diagonal", help="variational family (pyvae.guides.GUIDES)")
    parser.add_argument("--data-file", default=None, help="an array file instead of MNIST")
    parser.add_argument("--valid-size", type=int, default=10000, help="held-out datapoints (default 10000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example-mnist")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    # the same data options `pyvae train` stores in a run, so `pyvae plot OUT` works on this run
    data_cfg = dict(dataset="mnist", data_file=args.data_file, binarize="dynamic",
                    valid_size=args.valid_size, seed=args.seed)
    train, valid = load_split(data_cfg, "train"), load_split(data_cfg, "valid")
    train = first(train, args.train_size)
    valid = first(valid, 2000)

    pyro.set_rng_seed(args.seed)
    vae = pyvae.VAE(x_dim=train.x_dim, z_dim=args.z_dim,
                    hidden=[int(h) for h in args.hidden.split(",")], guide=args.guide)
    trainer = pyvae.Trainer(vae, epochs=args.epochs, batch_size=min(100, len(train)), seed=args.seed,
                            out=args.out, overwrite=True, progress=False,
                            extra_config=data_cfg)
    for record in trainer.fit(train, valid):
        print(f"epoch {record['epoch']}: train ELBO {record['train_elbo']:.2f}, "
              f"valid ELBO {record['valid_elbo']:.2f} nats ({record['seconds']:.1f} s)")
    # figures from the held-out digits, straight from the objects we hold
    fig_dir = os.path.join(args.out, "figures")
    x, labels = valid.x[:1000], valid.labels[:1000] if valid.labels is not None else None
    shape = valid.image_shape
    print(plots.training_curves(trainer.history, os.path.join(fig_dir, "curves.png")))
    print(plots.reconstructions(vae, x, os.path.join(fig_dir, "reconstructions.png"), image_shape=shape))
    print(plots.prior_samples(vae, os.path.join(fig_dir, "samples.png"), image_shape=shape))
    print(plots.latent_scatter(vae, x, labels, os.path.join(fig_dir, "latent.png")))
    if vae.z_dim == 2:
        print(plots.latent_manifold(vae, os.path.join(fig_dir, "manifold.png"), image_shape=shape))


if __name__ == "__main__":
    main()
