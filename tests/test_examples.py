"""The scripts in examples/ run and learn (short runs with --quick)."""

import pathlib
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _main(name):
    return runpy.run_path(str(EXAMPLES / name))["main"]


def test_demand_regression_beats_predicting_the_mean(capsys):
    mae = _main("demand_regression.py")(quick=True)
    assert mae < 15  # predicting the mean demand is off by ~45 units on average
    assert "identical predictions" in capsys.readouterr().out


def test_digits_classification_learns():
    assert _main("digits_classification.py")(quick=True) > 0.85


def test_online_learning_tracks_the_plant():
    assert _main("online_learning.py")(quick=True) < 0.3  # the response spans about +-2.5


def test_model_based_control_holds_the_pendulum_up(capsys):
    random_cost, planned_cost = _main("model_based_control.py")(quick=True)
    assert planned_cost < random_cost / 10  # random torques let it fall; doing nothing too
    assert "planning with the ensemble" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_quick_mode(name):
    assert "--quick" in (EXAMPLES / name).read_text()
