"""engine/options.py: every training option defined once, its parser (command-line text and
Python values alike) and the translation into Model / Trainer / schedule / data arguments."""
import re

import pytest

from engine.options import K1_FROM_DATA, OPTIONS, defaults, given_only, parse_memory, parse_options, train_arguments


def test_text_and_python_values_parse_alike():
    from_text = parse_options({"hidden": "16", "lr": "0.01", "difference": "true", "memory": "2K", "cell": "gru"})
    from_python = parse_options({"hidden": 16, "lr": 1e-2, "difference": True, "memory": 2048, "cell": "gru"})
    assert from_text == from_python
    assert from_text["hidden"] == 16 and from_text["memory"] == 2048 and from_text["difference"] is True
    assert from_text["streams"] is None   # left to the data (engine.forecasting.prepare.derived_streams)
    assert parse_options({"difference": "auto"})["difference"] is None


@pytest.mark.parametrize("given, message", [
    ({"hidden": 0}, "hidden (--hidden): 0 is not in the range x>=1"),
    ({"hidden": True}, "hidden (--hidden): expected an integer; got True"),
    ({"val_fraction": 1.0}, "val_fraction (--val-fraction): 1.0 is not in the range 0<=x<1"),
    ({"clip_value": 0}, "clip_value (--clip-value): 0.0 is not in the range x>0"),
    ({"lr": float("nan")}, "lr (--lr): nan is not in the range x>0"),
    ({"optimizer": "lbfgs"}, "optimizer (--optimizer): expected one of adam, adamw, rmsprop, sgd; got 'lbfgs'"),
    ({"difference": "maybe"}, "difference (--difference): expected true or false; got 'maybe'"),
    ({"inputs": [1.5]}, "inputs (--inputs): expected column names or 0-based indices"),
    ({"memory": "lots"}, "memory (--memory): expected 'sqrt' or a finite byte count such as 200M; got 'lots'"),
    ({"memory": "0"}, "memory (--memory): must be positive"),
])
def test_bad_values_name_the_option(given, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_options(given)


def test_unknown_names_list_the_options():
    with pytest.raises(TypeError, match="unknown training option 'hiden'; the options are key, time_column, "):
        parse_options({"hiden": 4})


def test_time_column_none_and_memory_forms():
    assert OPTIONS["time_column"].parse("none") is False and OPTIONS["time_column"].parse("date") == "date"
    assert parse_memory("sqrt") == "sqrt" and parse_memory("1.5M") == 3 * 2 ** 19 and parse_memory(None) is None


def test_train_arguments_translate_the_command_line_defaults():
    arguments = train_arguments(defaults())
    assert arguments["model_options"] == dict(cell="lstm", hidden_size=64, num_layers=1, dtype="float32",
                                              init="default", forget_bias=0.0, seed=0, dropout=0.0,
                                              recurrent_dropout=0.0, zoneout=0.0,
                                              skip=None)   # the linear path: from the data
    assert train_arguments({**defaults(), "skip": False})["model_options"]["skip"] is False
    assert arguments["trainer_options"]["k1"] == K1_FROM_DATA   # derived when the data are prepared
    assert arguments["trainer_options"]["clip_norm"] == 1.0
    assert train_arguments({**defaults(), "k1": 30})["trainer_options"]["k1"] == 30
    assert arguments["data_options"]["streams"] is None and arguments["data_options"]["val_fraction"] == 0.1
    assert (arguments["data_options"]["calendar"], arguments["data_options"]["lags"]) == ("auto", "auto")
    assert arguments["data_options"]["difference"] is None   # decided from the data
    assert (arguments["epochs"], arguments["schedule"]) == (20, {"name": "constant", "warmup_steps": 0})
    full = train_arguments({**defaults(), "full_bptt": True, "clip_norm": 0.0, "cell": "rnn", "nonlinearity": "relu"})
    assert (full["trainer_options"]["k1"], full["trainer_options"]["clip_norm"]) == (None, None)
    assert full["model_options"]["nonlinearity"] == "relu"


def test_given_only_keeps_what_the_named_options_set():
    arguments = given_only(train_arguments(parse_options({"hidden": 8, "full_bptt": True, "streams": 4})),
                           {"hidden", "full_bptt", "streams"})
    assert arguments["model_options"] == {"hidden_size": 8}
    assert arguments["trainer_options"] == {"k1": None, "k2": None}
    assert arguments["data_options"] == {"streams": 4} and arguments["schedule"] == {}
