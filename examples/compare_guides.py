"""Compare variational families on MNIST: one VAE per family, then ELBO, IWAE_k and log p^(x).

    python examples/compare_guides.py --epochs 1 --train-size 5000 --test-size 200 --num-samples 100

runs in under a minute; the table is printed and written, with the gap plot, to --out.
``--data-file`` uses an array file instead of MNIST (see ``pyvae.data.load_array``).
"""
import argparse

import torch

import pyvae
from pyvae.data import load_split
from pyvae.compare import markdown_table
from pyvae.data import TensorData


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guides", default="diagonal,full-rank,iaf,planar")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=None, help="first N training images only")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--hidden", default="200,200")
    parser.add_argument("--data-file", default=None)
    parser.add_argument("--valid-size", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/example-compare")
    args = parser.parse_args(argv)

    data_cfg = dict(dataset="mnist", data_file=args.data_file, binarize="dynamic",
                    valid_size=args.valid_size, seed=0)
    train, test = load_split(data_cfg, "train"), load_split(data_cfg, "test")
    if args.train_size is not None:
        train = TensorData(train.x[:args.train_size], binarize="dynamic", name="train")
    report = pyvae.compare(args.guides.split(","), train, test, epochs=args.epochs,
                           num_samples=args.num_samples,
                           iwae_k=[k for k in (5, 50) if k < args.num_samples],
                           test_size=args.test_size, z_dim=args.z_dim,
                           hidden=[int(h) for h in args.hidden.split(",")],
                           batch_size=min(100, len(train)), num_threads=args.threads,
                           out=args.out, overwrite=True)
    print(markdown_table(report))
    print(f"table, CSV, JSON and gap plot in {args.out}/")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
