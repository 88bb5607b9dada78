"""``--config FILE`` of the example parsers: JSON/TOML values become flags, the command line wins."""

from __future__ import annotations

import json

import pytest

from pyro_bdl.config_file import program_name, read_config
from pyro_bdl.experiment import make_parser


def parser():
    made = make_parser("demo")
    made.add_argument("--epochs", type=int, default=5)
    made.add_argument("--lr", type=float, default=1e-3)
    made.add_argument("--loss", choices=["elbo", "iwae"], default="elbo")
    made.add_argument("--ema", type=float, nargs="+", default=[])
    made.add_argument("--hidden-dims", action="append", default=None)
    made.add_argument("--no-figures", action="store_true")
    made.add_argument("--no-progress", dest="progress", action="store_false")
    return made


def test_a_toml_file_sets_every_kind_of_flag_and_the_command_line_overrides_it(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'epochs = 3\nlr = 0.01\nloss = "iwae"\nema = [0.9, 0.99]\nhidden-dims = [[200, 200], [100]]\n'
        "no_figures = true\nno-progress = true\n"
    )
    args = parser().parse_args(["--config", str(path), "--epochs", "7"])
    assert (args.epochs, args.lr, args.loss, args.ema) == (7, 0.01, "iwae", [0.9, 0.99])
    assert args.hidden_dims == ["200,200", "100"] and args.no_figures is True and args.progress is False
    assert parser().parse_args(["--config", str(path), "--hidden-dims", "8"]).hidden_dims == ["8"]  # replaced


def test_json_null_keeps_the_default_and_an_empty_list_keeps_nargs_plus_at_its_default(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": None, "ema": [], "lr": 2, "no_figures": False}))
    args = parser().parse_args([f"--config={path}"])
    assert (args.epochs, args.ema, args.lr, args.no_figures, args.progress) == (5, [], 2.0, False, True)


def test_an_on_off_flag_keyed_by_its_destination_as_a_results_json_records_it(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"progress": False, "hidden_dims": [[8]]}))
    args = parser().parse_args([f"--config={path}"])
    assert args.progress is False and args.hidden_dims == ["8"]
    path.write_text(json.dumps({"progress": True}))
    assert parser().parse_args([f"--config={path}"]).progress is True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"epoch": 3}, "unknown key(s) ['epoch']; the known keys are"),
        ({"epochs": "three"}, "invalid int value: 'three'"),
        ({"loss": "mse"}, "invalid choice: 'mse'"),
        ({"no_figures": "yes"}, "no_figures is an on/off flag, expected true or false"),
        ({"epochs": True}, "epochs takes a value, got True"),
    ],
)
def test_a_bad_file_is_a_usage_error(tmp_path, capsys, content, message):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["--config", str(path)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_read_config_refuses_other_suffixes_bad_syntax_and_non_tables(tmp_path):
    (tmp_path / "a.yaml").write_text("x: 1")
    with pytest.raises(ValueError, match=r"must name a \.json or \.toml file"):
        read_config(tmp_path / "a.yaml")
    (tmp_path / "b.toml").write_text("x = ")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_config(tmp_path / "b.toml")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a table"):
        read_config(tmp_path / "c.json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_config(tmp_path / "d.json")


def test_program_name_names_the_parser_and_lenient_mode_skips_unknown_keys(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 2, "recorded_elsewhere": 1}))
    with program_name("pyro-bdl train demo", ignore_unknown_keys=True):
        made = parser()
        assert made.parse_args(["--config", str(path)]).epochs == 2
    assert made.prog == "pyro-bdl train demo"
