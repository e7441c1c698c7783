"""The ``cnn_digits`` experiment: seed 002's CNN trained on the 8×8 digits (its --quick run)."""

import json

import numpy as np
import pytest

from experiments import _common, cnn_digits
from jaxcalc import cli

PLOTS = ("curves.png", "confusion_matrix.png", "misclassified.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``jaxcalc run cnn_digits --quick`` shared by the tests: (results.json, out folder)."""
    out = tmp_path_factory.mktemp("cnn_digits")
    assert cli.main(["run", "cnn_digits", "--quick", "--out", str(out),
                     "--set", "progress=false"]) == 0
    return json.loads((out / "results.json").read_text()), out


def test_results_json_holds_the_contract_keys(quick_run):
    results, out = quick_run
    for key in ("test_accuracy", "test_loss", "train_accuracy", "per_class_accuracy",
                "confusion_matrix", "epochs", "seconds", "train_seconds", "history"):
        assert key in results, key
    assert results["epochs"] == cnn_digits.QUICK_CONFIG["epochs"]
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert len(results["history"][name]) == results["epochs"]
    assert results["history"]["test_accuracy"][-1] == results["test_accuracy"]
    assert 0 < results["train_seconds"] <= results["seconds"]
    assert json.loads((out / "config.json").read_text())["quick"] is True


def test_quick_run_learns_the_digits(quick_run):
    results, _ = quick_run
    assert results["test_accuracy"] > 0.8  # chance is 0.1
    assert results["test_loss"] < 0.5 * np.log(10)  # well below the uniform guess, log 10
    # training moved the loss down, epoch over epoch overall
    assert results["history"]["train_loss"][-1] < results["history"]["train_loss"][0]


def test_confusion_matrix_is_consistent_with_the_accuracies(quick_run):
    results, _ = quick_run
    confusion = np.asarray(results["confusion_matrix"])
    y_test = _common.load_digits().y_test
    assert confusion.shape == (10, 10)
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(y_test, minlength=10))
    # float32 mean of 450 hits vs the exact count ratio: equal to float32 rounding
    np.testing.assert_allclose(np.trace(confusion) / len(y_test), results["test_accuracy"],
                               rtol=1e-6)
    np.testing.assert_allclose(results["per_class_accuracy"],
                               np.diag(confusion) / confusion.sum(axis=1), rtol=1e-12)
    assert results["misclassified"] == len(y_test) - np.trace(confusion)


def test_plots_are_written(quick_run):
    _, out = quick_run
    for name in PLOTS:
        path = out / name
        assert path.exists(), name
        assert path.read_bytes()[:8] == PNG_MAGIC, name


def test_summary_lists_the_accuracy(quick_run):
    results, _ = quick_run
    text = cnn_digits.summarize(results)
    assert "test accuracy" in text and f"{results['test_accuracy']:.4g}" in text


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    np.testing.assert_array_equal(cnn_digits.confusion_matrix(labels, predicted, 3), expected)
    # transposing the roles is a different matrix: the test would catch swapped axes
    assert not np.array_equal(cnn_digits.confusion_matrix(predicted, labels, 3), expected)


def test_confusion_matrix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"confusion_matrix: labels and predicted .*\(5,\)"):
        cnn_digits.confusion_matrix(np.zeros(5, int), np.zeros(4, int), 3)
