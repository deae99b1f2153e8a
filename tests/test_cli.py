"""The command line on small CSV files written here: train, predict, and one-line errors with status 2."""

import csv
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_text(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A demand table (regression) and a level table (text classes), 120 rows each."""
    folder = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    price, promo, temp = rng.uniform(1, 10, 120), rng.integers(0, 2, 120), rng.normal(20, 5, 120)
    demand = 100 - 6 * price + 15 * promo + 0.8 * temp + rng.normal(0, 1, 120)
    level = np.where(demand > 80, "high", np.where(demand > 65, "mid", "low"))
    rows = list(zip(price.round(3), promo, temp.round(3)))
    return {
        "demand": _write_csv(folder / "demand.csv", ["price", "promo", "temperature", "demand"],
                             [(*r, round(d, 3)) for r, d in zip(rows, demand)]),
        "level": _write_csv(folder / "level.csv", ["price", "promo", "temperature", "level"],
                            [(*r, c) for r, c in zip(rows, level)]),
        "features": _write_csv(folder / "new.csv", ["temperature", "price", "promo"],
                               [(r[2], r[0], r[1]) for r in rows[:7]]),
        "x": np.array(rows, dtype=float), "demand_values": demand, "levels": level,
    }


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_train_regression_then_predict(tables, tmp_path, capsys):
    model = tmp_path / "demand.npz"
    code = main(["train", str(tables["demand"]), "--target", "demand", "--hidden", "16", "--epochs", "40",
                 "--lr", "0.01", "--out", str(model), "--progress"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "regression of 'demand' from 3 features; 96 training / 24 validation rows" in out
    assert "val_r2" in out and err.count("epoch ") == 40
    r2 = float(out.split("val_r2 ")[1].split()[0])
    assert r2 > 0.8  # a linear target with small noise: a working fit explains most of it

    # predict reads features by name (in any column order) and undoes the target scaling.
    preds = tmp_path / "p.csv"
    assert main(["predict", str(model), str(tables["features"]), "--out", str(preds)]) == 0
    rows = _read_csv(preds)
    assert rows[0] == ["demand"] and len(rows) == 8
    net, params, meta = fnn.load(model, with_metadata=True)
    assert list(meta["features"]) == ["price", "promo", "temperature"]
    z = (tables["x"][:7] - meta["x_mean"]) / meta["x_scale"]
    expected = fnn.forward(net, params, z)[:, 0] * meta["y_scale"][0] + meta["y_mean"][0]
    np.testing.assert_allclose([float(r[0]) for r in rows[1:]], expected, rtol=1e-6)


def test_train_classification_with_text_labels_then_predict_to_stdout(tables, tmp_path, capsys):
    model = tmp_path / "level.npz"
    assert main(["train", str(tables["level"]), "--target", "level", "--epochs", "60", "--lr", "0.01",
                 "--hidden", "32", "--out", str(model)]) == 0
    out = capsys.readouterr().out
    assert "classification of 'level'" in out and "classes high, low, mid" in out
    assert float(out.split("val_accuracy ")[1].split()[0]) > 0.6  # three classes: chance is ~1/3
    assert main(["predict", str(model), str(tables["level"])]) == 0
    rows = _read_csv_text(capsys.readouterr().out)
    assert rows[0] == ["level"] and len(rows) == 121
    predicted = np.array([r[0] for r in rows[1:]])
    assert set(predicted) <= {"high", "mid", "low"}
    assert np.mean(predicted == tables["levels"]) > 0.6


def _read_csv_text(text):
    return list(csv.reader(text.splitlines()))


def test_plot_writes_the_loss_and_metric_curves_with_the_kept_epoch(tables, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    figures = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), savefig(fig, *a, **k)))
    png = tmp_path / "loss.png"
    assert main(["train", str(tables["demand"]), "--target", "demand", "--epochs", "6", "--patience", "2",
                 "--out", str(tmp_path / "m.npz"), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    kept = int(out.split("kept epoch ")[1].split(" ")[0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_axes, metric_axes = figures[0].axes
    assert loss_axes.get_ylabel().startswith("mse loss") and metric_axes.get_ylabel() == "r2"
    for ax in (loss_axes, metric_axes):
        marks = [line for line in ax.get_lines() if line.get_label() == f"kept epoch {kept}"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [kept, kept]
    ran = int(out.split("kept epoch ")[1].split(" of ")[1].split(",")[0])
    assert len(metric_axes.get_lines()[0].get_ydata()) == ran
    model = tmp_path / "never.npz"
    assert main(["train", str(tables["demand"]), "--target", "demand", "--out", str(model),
                 "--plot", str(tmp_path / "no" / "loss.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "does not exist" in err and not model.exists()


def _bad_files(folder, tables):
    return {
        "missing file": (["train", str(folder / "nope.csv"), "--target", "y"], "nope.csv: no such file"),
        "empty file": (["train", str(_write_csv(folder / "empty.csv", [], [])), "--target", "y"],
                       "the file is empty"),
        "header only": (["train", str(_write_csv(folder / "h.csv", ["a", "y"], [])), "--target", "y"],
                        "no data rows"),
        "missing target": (["train", str(tables["demand"]), "--target", "sales"], "no column 'sales'"),
        "text feature": (["train", str(_write_csv(folder / "t.csv", ["a", "y"], [[1, 2], ["x", 3]])),
                          "--target", "y"], "column 'a' must be numeric; data row 2 holds 'x'"),
        "ragged row": (["train", str(_write_csv(folder / "r.csv", ["a", "y"], [[1, 2], [3]])), "--target", "y"],
                       "row 3 has 1 fields; the header has 2"),
        "one class": (["train", str(_write_csv(folder / "c.csv", ["a", "y"], [[1, "u"], [2, "u"]])),
                       "--target", "y"], "single class 'u'"),
        "text regression": (["train", str(tables["level"]), "--target", "level", "--task", "regression"],
                            "column 'level' must be numeric"),
        "csv as model": (["predict", str(tables["demand"]), str(tables["demand"])], "not a .npz"),
        "model without scaling": (["predict", str(folder / "plain.npz"), str(tables["demand"])],
                                  "no feature scaling"),
        "missing feature": (["predict", str(folder / "scaled.npz"), str(_write_csv(folder / "f.csv", ["price"],
                                                                                    [[1]]))],
                            "no feature columns 'promo', 'temperature'"),
        "unwritable output": (["predict", str(folder / "scaled.npz"), str(tables["features"]), "--out",
                               str(folder / "no" / "such" / "dir.csv")], "No such file or directory"),
        "a model too large": (["train", str(tables["demand"]), "--target", "demand", "--hidden", "100000,100000"],
                              "makes a model of 10,000,600,001 weights"),
        "a directory for --out": (["train", str(tables["demand"]), "--target", "demand", "--out", str(folder)],
                                  "is a directory; give a file name"),
        "an open quote": (["train", str(_write_text(folder / "q.csv", 'a,y\n"1,2\n3,4\n')), "--target", "y"],
                          "not a valid CSV file: column 'y' cannot be read"),
        "decimal commas": (["train", str(_write_text(folder / "d.csv", "a;b;y\n1,5;2;3\n2,5;3;4\n")), "--target", "y"],
                           "column 'a' must be numeric; data row 1 holds '1,5'"),
        "no target values": (["train", str(_write_csv(folder / "n.csv", ["a", "y"], [[1, ""], [2, "nan"]])),
                              "--target", "y"], "target column 'y' holds no values"),
    }


def test_bad_inputs_give_one_line_and_status_2(tables, tmp_path, capsys):
    fnn.save(tmp_path / "plain.npz", fnn.mlp([3, 1]), fnn.init(fnn.mlp([3, 1]), seed=0))
    assert main(["train", str(tables["demand"]), "--target", "demand", "--epochs", "1",
                 "--out", str(tmp_path / "scaled.npz")]) == 0
    capsys.readouterr()
    for name, (argv, message) in _bad_files(tmp_path, tables).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("fastnn: error: ") and err.count("\n") == 1, (name, err)
        assert message in err, (name, err)


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastnn", "train", str(tmp_path / "none.csv"), "--target", "y"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"fastnn: error: {tmp_path / 'none.csv'}: no such file\n"
    usage = subprocess.run([sys.executable, "-m", "fastnn", "train", "x.csv", "--target", "y", "--hidden", "4,a"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "comma-separated positive layer widths" in usage.stderr


def test_a_numeric_target_with_missing_cells_stays_a_regression(tables, tmp_path, capsys):
    """Empty, NA and nan target cells leave their rows out (and say so) instead of turning the
    target's values into classes."""
    rows = _read_csv(tables["demand"])
    for i, missing in zip((3, 10, 50), ("", "NA", "nan")):
        rows[i][-1] = missing
    data = _write_csv(tmp_path / "gaps.csv", rows[0], rows[1:])
    assert main(["train", str(data), "--target", "demand", "--epochs", "3", "--out", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "regression of 'demand'" in out and "left out 3 rows" in out
    _, _, meta = fnn.load(tmp_path / "m.npz", with_metadata=True)
    assert str(meta["task"]) == "regression"


def test_a_negative_seed_is_named_in_the_error(tables, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tables["demand"]), "--target", "demand", "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "argument --seed: expected a non-negative integer; got '-1'" in capsys.readouterr().err


def test_a_target_of_few_whole_numbers_is_classification_and_says_how_to_override(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2))
    label = (x[:, 0] > 0).astype(int)
    data = _write_csv(tmp_path / "binary.csv", ["a", "b", "label"], [(*r.round(4), t) for r, t in zip(x, label)])
    assert main(["train", str(data), "--target", "label", "--epochs", "5", "--out", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "classification of 'label'" in out and "--task regression to override" in out
    assert main(["train", str(data), "--target", "label", "--task", "regression", "--epochs", "2",
                 "--out", str(tmp_path / "r.npz")]) == 0
    out = capsys.readouterr().out
    assert "regression of 'label'" in out and "to override" not in out


def test_early_stopping_keeps_the_best_epoch_by_default(tables, tmp_path, capsys):
    argv = ["train", str(tables["demand"]), "--target", "demand", "--epochs", "400", "--lr", "0.03",
            "--out", str(tmp_path / "m.npz"), "--threads", "1"]
    assert main(argv + ["--patience", "2"]) == 0
    out = capsys.readouterr().out
    kept, ran = (int(v) for v in out.split("kept epoch ")[1].split(",")[0].split(" of "))
    assert kept < ran < 400  # stopped early, and kept an earlier epoch
    assert main(argv + ["--patience", "0", "--epochs", "3"]) == 0
    assert "kept the last epoch, 3" in capsys.readouterr().out
    assert main(argv + ["--no-early-stopping", "--epochs", "2"]) == 0
    assert "kept the last epoch, 2" in capsys.readouterr().out


@pytest.mark.parametrize("option, value", [("--weight-decay", "-1"), ("--patience", "-2"), ("--threads", "0")])
def test_training_options_name_themselves_in_errors(tables, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tables["demand"]), "--target", "demand", option, value])
    assert exit_info.value.code == 2 and f"argument {option}:" in capsys.readouterr().err


@pytest.mark.parametrize("seconds, shown", [(0.0, True), (1e6, False)])
def test_a_notice_while_compiling_takes_long(tables, tmp_path, capsys, monkeypatch, seconds, shown):
    """The notice appears once compiling has taken COMPILE_NOTICE_SECONDS (0 here: at once), and
    never when it takes less."""
    import fastnn.cli as cli
    monkeypatch.setattr(cli, "COMPILE_NOTICE_SECONDS", seconds)
    real_fit = fnn.fit

    def slow_first_fit(*args, **kwargs):  # long enough for a 0-second timer to fire first
        time.sleep(0.2)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fnn, "fit", slow_first_fit)
    assert main(["train", str(tables["demand"]), "--target", "demand", "--epochs", "1",
                 "--out", str(tmp_path / "m.npz")]) == 0
    assert ("compiling kernels (first run only)..." in capsys.readouterr().err) == shown


def test_predict_writes_probabilities_and_ids_and_scores_against_a_present_target(tables, tmp_path, capsys):
    model = tmp_path / "level.npz"
    assert main(["train", str(tables["level"]), "--target", "level", "--epochs", "40", "--lr", "0.01",
                 "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model), str(tables["level"]), "--proba", "--id", "price"]) == 0
    out, err = capsys.readouterr()
    rows = _read_csv_text(out)
    assert rows[0] == ["price", "level", "P(high)", "P(low)", "P(mid)"] and len(rows) == 121
    prices = [r[0] for r in _read_csv(tables["level"])[1:]]
    assert [r[0] for r in rows[1:]] == prices
    probabilities = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert [r[1] for r in rows[1:]] == [["high", "low", "mid"][k] for k in np.argmax(probabilities, axis=1)]
    accuracy = np.mean([r[1] for r in rows[1:]] == tables["levels"])
    assert f"score against the level column: accuracy {accuracy:.4g}  (120 rows)" in err
    assert main(["evaluate", str(model), str(tables["level"])]) == 0
    assert f"accuracy {accuracy:.4g}  (120 rows)" in capsys.readouterr().out


def test_evaluate_scores_a_regression_in_the_targets_units(tables, tmp_path, capsys):
    model = tmp_path / "demand.npz"
    assert main(["train", str(tables["demand"]), "--target", "demand", "--epochs", "40", "--lr", "0.01",
                 "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model), str(tables["demand"]), "--out", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
    predicted = np.array([float(r[0]) for r in _read_csv(tmp_path / "p.csv")[1:]])
    truth = tables["demand_values"].round(3)
    r2 = 1 - np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert main(["evaluate", str(model), str(tables["demand"])]) == 0
    out = capsys.readouterr().out
    assert f"r2 {r2:.4g}" in out and f"mae {np.mean(np.abs(truth - predicted)):.4g}" in out
    for argv, message in [
        (["evaluate", str(model), str(tables["features"])], "no column 'demand' (the model's target)"),
        (["predict", str(model), str(tables["demand"]), "--proba"], "--proba needs a classification model"),
        (["predict", str(model), str(tables["demand"]), "--id", "sku"], "no column 'sku' for --id"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("fastnn: error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_separated_files_with_a_byte_order_mark_read_as_commas_do(tables, tmp_path, capsys,
                                                                                      delimiter):
    rows = _read_csv(tables["demand"])
    other = tmp_path / "demand.txt"
    other.write_text("\ufeff" + "\n".join(delimiter.join(r) for r in rows) + "\n", encoding="utf-8")
    results = []
    for data in (tables["demand"], other):
        assert main(["train", str(data), "--target", "demand", "--epochs", "3", "--out", str(tmp_path / "m.npz")]) == 0
        final = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final: ")]
        results.append(final[0].split("  (")[0])  # the validation scores, without the time taken
        assert main(["predict", str(tmp_path / "m.npz"), str(data)]) == 0
        results.append(capsys.readouterr().out)
    assert results[0] == results[2] and results[1] == results[3]


def test_missing_feature_cells_are_an_error_or_filled_with_the_training_mean(tables, tmp_path, capsys):
    rows = _read_csv(tables["demand"])
    for i, missing in zip((3, 10, 50, 70), ("", "NA", "nan", " n/a ")):
        rows[i][1] = missing  # promo
    data = _write_csv(tmp_path / "gaps.csv", rows[0], rows[1:])
    model = tmp_path / "m.npz"
    assert main(["train", str(data), "--target", "demand", "--epochs", "2", "--out", str(model)]) == 2
    err = capsys.readouterr().err
    assert "column 'promo' has 4 missing cell(s), the first in data row 3; pass --missing mean" in err
    assert main(["train", str(data), "--target", "demand", "--epochs", "2", "--missing", "mean",
                 "--out", str(model)]) == 0
    assert "filled 4 missing feature cells" in capsys.readouterr().out
    net, params, meta = fnn.load(model, with_metadata=True)
    promo = np.array([float(r[1]) for r in rows[1:] if r[1].strip().lower() not in ("", "na", "nan", "n/a")])
    assert 0.2 < meta["x_fill"][1] < 0.8 and abs(meta["x_fill"][1] - promo.mean()) < 0.1  # the training rows' mean
    assert main(["predict", str(model), str(data)]) == 0  # the stored means fill the same gaps
    assert len(_read_csv_text(capsys.readouterr().out)) == 121


def test_drop_leaves_columns_out_of_the_features(tables, tmp_path, capsys):
    rows = _read_csv(tables["demand"])
    data = _write_csv(tmp_path / "ids.csv", ["sku"] + rows[0], [[f"A{i:04d}"] + r for i, r in enumerate(rows[1:])])
    model = tmp_path / "m.npz"
    assert main(["train", str(data), "--target", "demand", "--epochs", "2", "--out", str(model)]) == 2
    assert "column 'sku' must be numeric; data row 1 holds 'A0000'" in capsys.readouterr().err
    assert main(["train", str(data), "--target", "demand", "--epochs", "2", "--drop", "sku", "--out", str(model)]) == 0
    assert "from 3 features" in capsys.readouterr().out
    assert main(["predict", str(model), str(data), "--id", "sku"]) == 0
    out = _read_csv_text(capsys.readouterr().out)
    assert out[0] == ["sku", "demand"] and out[1][0] == "A0000" and len(out) == 121
    assert main(["train", str(data), "--target", "demand", "--drop", "sku,colour"]) == 2
    assert "no column given to --drop 'colour'" in capsys.readouterr().err


def test_infinite_cells_and_numeric_classes_written_two_ways(tmp_path, capsys):
    data = _write_csv(tmp_path / "inf.csv", ["a", "y"], [[1, 2], ["inf", 3], [2, 4]])
    assert main(["train", str(data), "--target", "y"]) == 2
    assert "column 'a' must hold finite numbers; data row 2 holds inf" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    a = rng.normal(size=80)
    labels = np.where(a > 0, "1.0", "0")  # one class written "1.0", the other "0"
    data = _write_csv(tmp_path / "classes.csv", ["a", "y"], list(zip(a.round(4), labels)))
    model = tmp_path / "m.npz"
    assert main(["train", str(data), "--target", "y", "--epochs", "30", "--lr", "0.01", "--out", str(model)]) == 0
    assert "classes 0, 1" in capsys.readouterr().out
    assert main(["evaluate", str(model), str(data)]) == 0
    accuracy = float(capsys.readouterr().out.split("accuracy ")[1].split()[0])
    assert accuracy > 0.9  # "1.0" in the file and the class "1" compare equal


def test_a_saved_model_loads_with_its_preparation_and_predicts_raw_rows(tables, tmp_path, capsys):
    import pandas as pd

    model_path = tmp_path / "level.npz"
    assert main(["train", str(tables["level"]), "--target", "level", "--epochs", "20", "--lr", "0.01",
                 "--out", str(model_path)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model_path), str(tables["level"]), "--proba"]) == 0
    printed = _read_csv_text(capsys.readouterr().out)[1:]
    model = fnn.TabularModel.load(model_path)
    assert model.task == "classification" and model.target == "level"
    assert model.features == ["price", "promo", "temperature"] and list(model.classes) == ["high", "low", "mid"]
    x = tables["x"]
    np.testing.assert_allclose(model.x_mean, x.mean(axis=0), rtol=0.1)  # the training rows': near the table's
    assert model.x_fill is None and model.y_mean is None
    assert list(model.predict(x)) == [r[0] for r in printed]
    np.testing.assert_allclose(model.predict_proba(x), [[float(v) for v in r[1:]] for r in printed], atol=1e-5)
    frame = pd.DataFrame(x[:, ::-1], columns=["temperature", "promo", "price"])  # other order: read by name
    assert list(model.predict(frame)) == list(model.predict(x))
    assert model.predict(x[0]).shape == (1,)
    gap = x[:2].copy()
    gap[0, 1] = np.nan
    with pytest.raises(ValueError, match="missing .NaN. cells, the first in column 'promo'"):
        model.predict(gap)
    with pytest.raises(ValueError, match=r"3 columns \(price, promo, temperature\)"):
        model.predict(x[:, :2])
    with pytest.raises(ValueError, match="no column.s. 'price'"):
        model.predict(frame.drop(columns="price"))
    model.save(tmp_path / "again.npz")
    again = fnn.TabularModel.load(tmp_path / "again.npz")
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))


def test_a_regression_model_predicts_in_the_targets_units(tables, tmp_path, capsys):
    model_path = tmp_path / "demand.npz"
    assert main(["train", str(tables["demand"]), "--target", "demand", "--epochs", "40", "--lr", "0.01",
                 "--out", str(model_path)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model_path), str(tables["demand"])]) == 0
    printed = np.array([float(r[0]) for r in _read_csv_text(capsys.readouterr().out)[1:]])
    model = fnn.TabularModel.load(model_path)
    assert model.classes is None and 50 < model.y_mean < 90 and model.y_scale > 1
    np.testing.assert_allclose(model.predict(tables["x"]), printed, rtol=1e-6)
    with pytest.raises(ValueError, match="predict_proba needs a classification model"):
        model.predict_proba(tables["x"])
    with pytest.raises(ValueError, match="no feature scaling"):
        fnn.save(tmp_path / "bare.npz", fnn.mlp([3, 1]), fnn.init(fnn.mlp([3, 1]), seed=0))
        fnn.TabularModel.load(tmp_path / "bare.npz")


def test_train_prints_a_line_per_epoch_off_a_terminal_unless_told_not_to(tables, tmp_path, capsys):
    argv = ["train", str(tables["demand"]), "--target", "demand", "--epochs", "4", "--patience", "0",
            "--out", str(tmp_path / "m.npz")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 4 and "\r" not in err and "elapsed, ETA" in lines[-1] and "val_loss" in lines[-1]
    assert main(argv + ["--no-progress"]) == 0
    assert "epoch " not in capsys.readouterr().err
