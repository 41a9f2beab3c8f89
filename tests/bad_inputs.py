"""The bad-input corpus: one case per line. Each is (case id, how to make its files, CLI args,
the message expected on stderr). Every case must exit with status 2, print exactly one line on
stderr, no traceback, and leave the existing run directory byte-for-byte as it was.

Placeholders in args: {run} an existing finished run, {good} a good binary data file,
{tmp} a scratch directory, {file} the case's own file made by its maker.
"""
import pickle

import torch


class _RunsCode:
    """Unpickling it creates the file ``sentinel`` (the pickled file's path + ".ran"), which the
    corpus runner looks for: proof that code in the file ran."""

    def __init__(self, path):
        self.sentinel = str(path) + ".ran"

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _tensor(x):
    return lambda path: torch.save(x, path)


def _crafted_checkpoint(path):
    torch.save({"format": "pyvae-checkpoint", "version": 1, "evil": _RunsCode(path)}, path)


def _raw_pickle(path):
    with open(path, "wb") as f:
        pickle.dump(_RunsCode(path), f)


def _text(path):
    with open(path, "w") as f:
        f.write("not a tensor\n")


CASES = [
    ("nan-pixels", _tensor(torch.full((50, 12), float("nan"))), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "NaN or Inf"),
    ("inf-pixels", _tensor(torch.full((50, 12), float("inf"))), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "NaN or Inf"),
    ("outside-unit-interval", _tensor(torch.full((50, 12), 1.5)), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "must lie in [0, 1]"),
    ("grey-pixels-bernoulli", _tensor(torch.full((50, 12), 0.5)), ["train", "--data-file", "{file}", "--binarize", "none", "--out", "{tmp}/r", "--valid-size", "10"], "needs binary data"),
    ("wrong-shape", _tensor(torch.zeros(50)), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "expected data of shape (N, x_dim)"),
    ("empty-dataset", _tensor(torch.zeros(0, 12)), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "0"], "is empty"),
    ("unreadable-data-file", _text, ["train", "--data-file", "{file}", "--out", "{tmp}/r"], "cannot read data file"),
    ("pickled-data-file", _raw_pickle, ["train", "--data-file", "{file}", "--out", "{tmp}/r"], "cannot read data file"),
    ("missing-data-file", None, ["train", "--data-file", "{tmp}/nope.pt", "--out", "{tmp}/r"], "no data file at"),
    ("batch-size-zero", None, ["train", "--data-file", "{good}", "--batch-size", "0", "--out", "{tmp}/r"], "must be positive"),
    ("batch-size-negative", None, ["train", "--data-file", "{good}", "--batch-size", "-5", "--out", "{tmp}/r"], "must be positive"),
    ("batch-larger-than-data", None, ["train", "--data-file", "{good}", "--valid-size", "100", "--batch-size", "100000", "--out", "{tmp}/r"], "larger than the training set"),
    ("unknown-guide", None, ["train", "--data-file", "{good}", "--guide", "gaussian-mixture-of-dreams", "--out", "{tmp}/r"], "unknown guide 'gaussian-mixture-of-dreams'; choose one of: "),
    ("unknown-likelihood", None, ["train", "--data-file", "{good}", "--likelihood", "poisson-ish", "--out", "{tmp}/r"], "unknown likelihood 'poisson-ish'; choose one of: "),
    ("unknown-prior", None, ["train", "--data-file", "{good}", "--prior", "cauchy-ish", "--out", "{tmp}/r"], "unknown prior 'cauchy-ish'; choose one of: "),
    ("unknown-loss", None, ["train", "--data-file", "{good}", "--loss", "elbo2", "--out", "{tmp}/r"], "unknown loss 'elbo2'; choose one of: "),
    ("unknown-optimizer", None, ["train", "--data-file", "{good}", "--optimizer", "sgd2", "--out", "{tmp}/r"], "unknown optimizer 'sgd2'; choose one of: "),
    ("unknown-activation", None, ["train", "--data-file", "{good}", "--activation", "wiggle", "--out", "{tmp}/r"], "unknown activation 'wiggle'; choose one of: "),
    ("unknown-dataset", None, ["train", "--dataset", "imagenet", "--out", "{tmp}/r"], "unknown dataset 'imagenet'; choose one of: "),
    ("z-dim-zero", None, ["train", "--data-file", "{good}", "--z-dim", "0", "--out", "{tmp}/r"], "must be positive"),
    ("z-dim-negative", None, ["train", "--data-file", "{good}", "--z-dim", "-3", "--out", "{tmp}/r"], "must be positive"),
    ("lr-zero", None, ["train", "--data-file", "{good}", "--lr", "0", "--out", "{tmp}/r"], "must be a positive number"),
    ("lr-negative", None, ["train", "--data-file", "{good}", "--lr", "-0.1", "--out", "{tmp}/r"], "must be a positive number"),
    ("lr-nan", None, ["train", "--data-file", "{good}", "--lr", "nan", "--out", "{tmp}/r"], "must be a positive number"),
    ("epochs-not-a-number", None, ["train", "--data-file", "{good}", "--epochs", "ten", "--out", "{tmp}/r"], "invalid int value"),
    ("hidden-garbage", None, ["train", "--data-file", "{good}", "--hidden", "200,,x", "--out", "{tmp}/r"], "expected comma-separated integers"),
    ("no-out", None, ["train", "--data-file", "{good}"], "--out RUN_DIR is required"),
    ("resume-not-a-run", None, ["train", "--resume", "{tmp}"], "is not a pyvae run"),
    ("resume-missing-dir", None, ["train", "--resume", "{tmp}/missing"], "is not a directory"),
    ("resume-config-mismatch", None, ["train", "--resume", "{run}", "--z-dim", "7"], "config mismatch on resume: --z-dim 7"),
    ("resume-config-mismatch-lr", None, ["train", "--resume", "{run}", "--lr", "0.5"], "config mismatch on resume: --lr 0.5"),
    ("out-is-existing-run", None, ["train", "--data-file", "{good}", "--out", "{run}"], "already holds a run; resume it (--resume) or pass --overwrite"),
    ("out-is-a-file", _text, ["train", "--data-file", "{good}", "--out", "{file}"], "exists and is not a directory"),
    ("no-download-no-data", None, ["train", "--dataset", "mnist", "--data-dir", "{tmp}/empty", "--no-download", "--out", "{tmp}/r"], "download disabled"),
    ("bad-device", None, ["train", "--data-file", "{good}", "--device", "quantum", "--out", "{tmp}/r"], "bad device"),
    ("cuda-without-gpu", None, ["train", "--data-file", "{good}", "--device", "cuda:7", "--out", "{tmp}/r"], "cuda"),
    ("crafted-checkpoint", _crafted_checkpoint, ["train", "--resume", "{tmpdir_with_checkpoint}"], "refused to load"),
    ("truncated-checkpoint", "truncated", ["train", "--resume", "{tmpdir_with_checkpoint}"], "not a readable checkpoint"),
    ("foreign-checkpoint", _tensor({"weights": torch.zeros(3)}), ["train", "--resume", "{tmpdir_with_checkpoint}"], "not a pyvae checkpoint"),
]
