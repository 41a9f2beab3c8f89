"""One home per option: each option of a guide family is a field of the family's ``Options``
(default, check, help, flag), and the command line's flags come from the registry. Every
family option given as a flag reaches the family; a family registered with one option of its
own gets its flag, its check and its place in config.json without any other module knowing it."""
import json
import os
from dataclasses import dataclass, fields

import pyro.distributions as dist
import pytest
import torch

import pyvae
from pyvae.cli import build_parser, main
from pyvae.cli.flags import guide_flags
from pyvae.cli.train import model_config
from pyvae.config import Config, option, positive_int
from pyvae.models.guides import GUIDES, GuideFamily
from pyvae.models.nets import MLP


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


OPTION_CASES = [(name, f) for name, family in GUIDES.items() for f in fields(family.Options)]


@pytest.mark.parametrize("family, f", OPTION_CASES, ids=[f"{n}-{f.name}" for n, f in OPTION_CASES])
def test_each_guide_option_flag_reaches_its_family(family, f):
    example = f.metadata.get("example")
    assert example is not None and example != f.default, \
        f"{family}: give the option {f.name} an example= value other than its default"
    args = build_parser().parse_args(["train", "--guide", family, "--z-dim", "3", "--hidden", "8",
                                      _flag(f), _text(example)])
    vae = pyvae.VAE(config=model_config(args).replace(x_dim=12))
    assert type(vae.encoder) is GUIDES[family]
    assert getattr(vae.encoder.options, f.name) == example
    # one Options object, built once by the config and handed to the family
    assert vae.encoder.options is vae.model_config.guide_options
    # compare takes the same flags and hands them to every family that takes them
    cmp = build_parser().parse_args(["compare", "--out", "x", _flag(f), _text(example)])
    assert getattr(cmp, f.name) == (list(example) if isinstance(example, tuple) else example)


def test_the_guide_flags_are_the_registry_options():
    expected = {_flag(f) for _, family in GUIDES.items() for f in fields(family.Options)}
    parser = build_parser()
    for command in ("train", "compare"):
        assert expected <= set(parser.commands[command].flags), command
    assert {_flag(f) for f in guide_flags()} == expected


# ------------------------------------------------------------------ a family added from outside
@dataclass
class WidthOptions(Config):
    width: int = option(3, "toy guide: units of its one hidden layer", positive_int, example=5)


class Toy(GuideFamily):
    """A diagonal Gaussian from one hidden layer of ``options.width`` units."""

    Options = WidthOptions

    def __init__(self, x_dim, z_dim, hidden=(200, 200), activation="tanh", options=None,
                 **option_values):
        super().__init__(x_dim, z_dim, options, **option_values)
        self.net = MLP(x_dim, [self.options.width], 2 * self.z_dim, activation)

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)


def test_a_family_registered_with_one_option_gets_its_flag_and_its_use(monkeypatch, tmp_path,
                                                                        capsys):
    monkeypatch.setitem(GUIDES, "toy", Toy)
    for command in ("train", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--width WIDTH toy guide: units of its one hidden layer (default 3)" in text
    data = tmp_path / "x.pt"
    torch.save(torch.bernoulli(torch.full((60, 12), 0.3), generator=torch.Generator().manual_seed(0)), data)
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", str(data), "--guide", "toy", "--width", "5", "--z-dim", "2",
                 "--hidden", "8", "--batch-size", "20", "--epochs", "1", "--out", out,
                 "--no-progress"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["vae"]["width"] == 5
    vae = pyvae.Run(out).load_vae()
    assert vae.encoder.options == WidthOptions(width=5)
    assert (12, 5) in {(m.in_features, m.out_features) for m in vae.modules()
                       if isinstance(m, torch.nn.Linear)}
    # its check, from its field, is the flag's; another family refuses the option
    with pytest.raises(SystemExit):
        main(["train", "--guide", "toy", "--width", "0"])
    assert "width must be positive, got 0" in capsys.readouterr().err
    assert main(["train", "--data-file", str(data), "--guide", "diagonal", "--width", "5",
                 "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "the diagonal guide takes no width" in capsys.readouterr().err
