"""The bad-input corpus: one case per line. Each is (case id, how to make its files, CLI args,
the message expected on stderr). Every case must exit with status 2, print exactly one line on
stderr, no traceback, and leave the existing run directory byte-for-byte as it was.

Placeholders in args: {run} an existing finished run, {good} a good binary data file,
{tmp} a scratch directory, {file} the case's own file made by its maker.
"""
import os
import pickle

import numpy as np
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


def _user_dir(path):
    """A directory of someone's files that happen to share a run's file names."""
    os.makedirs(path + ".d")
    with open(os.path.join(path + ".d", "config.json"), "w") as f:
        f.write("my own notes\n")


def _damaged_comparison(path):
    os.makedirs(path + ".d")
    with open(os.path.join(path + ".d", "compare.json"), "w") as f:
        f.write('{"rows": [{"guide": "diagonal", "elbo": ')


def _npz_text_labels(path):
    with open(path, "wb") as f:
        np.savez(f, x=np.zeros((50, 12), dtype=np.float32), labels=np.array(["a"] * 50))


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
    ("checkpoint-missing-keys", _tensor({"format": "pyvae-checkpoint", "version": 1, "epoch": 1}), ["train", "--resume", "{tmpdir_with_checkpoint}"], "damaged checkpoint: missing vae_config"),
    ("evaluate-checkpoint-missing-keys", _tensor({"format": "pyvae-checkpoint", "version": 1}), ["evaluate", "{tmpdir_with_checkpoint}"], "damaged checkpoint: missing"),
    # data of the wrong kind
    ("complex-data", _tensor(torch.zeros(50, 12, dtype=torch.complex64)), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "complex data are not supported"),
    ("sparse-data", _tensor(torch.eye(50, 12).to_sparse()), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "sparse tensors are not supported"),
    ("zero-columns", _tensor(torch.zeros(50, 0)), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "datapoints have no values"),
    ("scalar-data", _tensor(torch.tensor(3.0)), ["train", "--data-file", "{file}", "--out", "{tmp}/r"], "expected data of shape (N, x_dim)"),
    ("0-d-labels", _tensor({"x": torch.zeros(50, 12), "labels": torch.tensor(3)}), ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "labels must be a 1-D"),
    ("text-labels", _npz_text_labels, ["train", "--data-file", "{file}", "--out", "{tmp}/r", "--valid-size", "10"], "cannot read data file"),
    # numbers out of range, checked before anything is allocated
    ("seed-negative", None, ["train", "--data-file", "{good}", "--seed", "-1", "--out", "{tmp}/r"], "in [0, 4294967295]"),
    ("seed-too-large", None, ["train", "--data-file", "{good}", "--seed", "4294967296", "--out", "{tmp}/r"], "in [0, 4294967295]"),
    ("evaluate-seed-negative", None, ["evaluate", "{run}", "--seed", "-1"], "in [0, 4294967295]"),
    ("hidden-huge", None, ["train", "--data-file", "{good}", "--hidden", "100000000000", "--out", "{tmp}/r"], "hidden 100000000000 is larger than the limit"),
    ("hidden-too-many-weights", None, ["train", "--data-file", "{good}", "--hidden", "1000000,1000000", "--out", "{tmp}/r"], "more than the limit"),
    ("particles-huge", None, ["train", "--data-file", "{good}", "--particles", "1000000000000", "--out", "{tmp}/r"], "particles 1000000000000 is larger than the limit"),
    ("flow-length-huge", None, ["train", "--data-file", "{good}", "--guide", "planar", "--flow-length", "100000000", "--out", "{tmp}/r"], "flow length 100000000 is larger than the limit"),
    ("epochs-huge", None, ["train", "--data-file", "{good}", "--epochs", "1000000000000", "--out", "{tmp}/r"], "epochs 1000000000000 is larger than the limit"),
    ("num-samples-huge", None, ["evaluate", "{run}", "--num-samples", "1000000000000"], "num samples 1000000000000 is larger than the limit"),
    # flags that do not apply
    ("rank-with-diagonal", None, ["train", "--data-file", "{good}", "--rank", "3", "--out", "{tmp}/r"], "the diagonal guide takes no rank"),
    ("components-with-normal-prior", None, ["train", "--data-file", "{good}", "--prior-components", "5", "--out", "{tmp}/r"], "prior 'normal' takes no option"),
    ("compare-option-no-family-takes", None, ["compare", "--guides", "diagonal", "--rank", "3", "--data-file", "{good}", "--out", "{tmp}/c"], "no family in diagonal takes rank"),
    # resume
    ("resume-flag-not-recorded", None, ["train", "--resume", "{run}", "--rank", "3"], "--rank is not recorded in"),
    ("resume-config-mismatch-arch", None, ["train", "--resume", "{run}", "--arch", "conv"], "config mismatch on resume: --arch conv"),
    ("resume-finished-run", None, ["train", "--resume", "{run}"], "has already trained 1 of 1 epochs"),
    ("resume-epochs-not-above-done", None, ["train", "--resume", "{run}", "--epochs", "1"], "pass --epochs N with N > 1"),
    # directories
    ("out-holds-user-files", _user_dir, ["train", "--data-file", "{good}", "--out", "{file}.d"], "is not empty and is not a pyvae run"),
    ("out-under-a-file", _text, ["train", "--data-file", "{good}", "--out", "{file}/run"], "is not a directory"),
    ("plot-damaged-comparison", _damaged_comparison, ["plot", "{file}.d"], "is damaged or not a comparison"),
    # flags that do not apply, in every command
    ("groups-without-grouped-loss", None, ["train", "--data-file", "{good}", "--groups", "3", "--out", "{tmp}/r"], "--groups 3 applies to the miwae and piwae losses only, not trace_elbo"),
    ("groups-1-without-grouped-loss", None, ["train", "--data-file", "{good}", "--groups", "1", "--out", "{tmp}/r"], "--groups 1 applies to the miwae and piwae losses only, not trace_elbo"),
    ("ciwae-beta-default-with-iwae", None, ["train", "--data-file", "{good}", "--loss", "iwae", "--ciwae-beta", "0.5", "--out", "{tmp}/r"], "--ciwae-beta 0.5 applies to the ciwae loss only, not iwae"),
    ("snr-groups-1-with-iwae", None, ["snr", "{run}", "--groups", "1"], "--groups 1 applies to the miwae and piwae losses only, not iwae"),
    ("ciwae-beta-with-iwae", None, ["train", "--data-file", "{good}", "--loss", "iwae", "--ciwae-beta", "0.3", "--out", "{tmp}/r"], "--ciwae-beta 0.3 applies to the ciwae loss only, not iwae"),
    ("resume-with-overwrite", None, ["train", "--resume", "{run}", "--overwrite", "--epochs", "2"], "--overwrite goes with --out"),
    ("evaluate-ais-steps-without-ais", None, ["evaluate", "{run}", "--ais-steps", "5"], "--ais-steps goes with --ais"),
    ("evaluate-ais-chains-without-ais", None, ["evaluate", "{run}", "--ais-chains", "5"], "--ais-chains goes with --ais"),
    ("snr-groups-with-iwae", None, ["snr", "{run}", "--groups", "3"], "--groups 3 applies to the miwae and piwae losses only, not iwae"),
    ("compare-refine-size-without-refine-steps", None, ["compare", "--guides", "diagonal", "--refine-size", "10", "--data-file", "{good}", "--out", "{tmp}/c"], "--refine-size goes with --refine-steps"),
    ("compare-ais-steps-without-refine-steps", None, ["compare", "--guides", "diagonal", "--ais-steps", "10", "--data-file", "{good}", "--out", "{tmp}/c"], "--ais-steps goes with --refine-steps"),
    # counts at their edges, checked before any work
    ("evaluate-ais-steps-huge", None, ["evaluate", "{run}", "--ais", "--ais-steps", "100000000"], "ais steps 100000000 is larger than the limit"),
    ("evaluate-ais-chains-huge", None, ["evaluate", "{run}", "--ais", "--ais-chains", "1000000000"], "ais chains 1000000000 is larger than the limit"),
    ("evaluate-max-datapoints-huge", None, ["evaluate", "{run}", "--max-datapoints", "100000000000"], "max datapoints 100000000000 is larger than the limit"),
    ("evaluate-chunk-size-huge", None, ["evaluate", "{run}", "--chunk-size", "100000000000"], "chunk size 100000000000 is larger than the limit"),
    ("bdmc-steps-huge", None, ["bdmc", "{run}", "--steps", "100000000"], "num steps 100000000 is larger than the limit"),
    ("bdmc-chains-huge", None, ["bdmc", "{run}", "--chains", "1000000000"], "num chains 1000000000 is larger than the limit"),
    ("bdmc-num-datapoints-huge", None, ["bdmc", "{run}", "--num-datapoints", "100000000000"], "num datapoints 100000000000 is larger than the limit"),
    ("bdmc-steps-zero", None, ["bdmc", "{run}", "--steps", "0"], "must be positive"),
    ("snr-k-huge", None, ["snr", "{run}", "--k", "1000000000"], "k 1000000000 is larger than the limit"),
    ("snr-repeats-huge", None, ["snr", "{run}", "--repeats", "100000000"], "repeats 100000000 is larger than the limit"),
    ("compare-refine-steps-huge", None, ["compare", "--guides", "diagonal", "--refine-steps", "100000000", "--data-file", "{good}", "--out", "{tmp}/c"], "refine steps 100000000 is larger than the limit"),
    ("compare-refine-steps-negative", None, ["compare", "--guides", "diagonal", "--refine-steps", "-5", "--data-file", "{good}", "--out", "{tmp}/c"], "refine_steps must be an integer >= 0"),
    ("compare-ais-steps-negative", None, ["compare", "--guides", "diagonal", "--refine-steps", "5", "--ais-steps", "-3", "--data-file", "{good}", "--out", "{tmp}/c"], "ais_steps must be an integer >= 0"),
    ("compare-epochs-huge", None, ["compare", "--guides", "diagonal", "--epochs", "1000000000000", "--data-file", "{good}", "--out", "{tmp}/c"], "epochs 1000000000000 is larger than the limit"),
    # directories of other commands and of the user
    ("compare-out-is-a-training-run", None, ["compare", "--guides", "diagonal", "--data-file", "{good}", "--out", "{run}"], "is a training run (pyvae train)"),
    ("compare-out-is-a-training-run-overwrite", None, ["compare", "--guides", "diagonal", "--data-file", "{good}", "--out", "{run}", "--overwrite"], "is a training run (pyvae train)"),
    ("compare-out-holds-user-files", _user_dir, ["compare", "--guides", "diagonal", "--data-file", "{good}", "--out", "{file}.d"], "is not empty and is not a pyvae comparison"),
    ("offline-download", None, ["train", "--dataset", "mnist", "--data-dir", "{tmp}/empty", "--no-download", "--out", "{tmp}/r"], "--data-dir DIR names another place"),
]
