"""resnets_utils' promises that the chapters rely on."""

import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

import resnets_utils as ru
import signs_dataset as sd

matplotlib.use("Agg")


def test_import_prints_nothing():
    """Importing the module (and so TensorFlow) must not write a single byte: no C++ log lines in notebooks."""
    result = subprocess.run([sys.executable, "-c", "import resnets_utils"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_training_prints_nothing_either():
    """TF 2.21 logs C++ 'errors' from tf.data during fit; they must stay out of notebook outputs too."""
    code = (
        "import resnets_utils as ru, numpy as np\n"
        "m = ru.deep_stack(1, True)\n"
        "m.compile('adam', 'sparse_categorical_crossentropy')\n"
        "m.fit(np.zeros((8, 16, 16, 3)), np.zeros(8), epochs=1, verbose=0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_tensorflow_runs_onednn_kernels_unless_told_not_to():
    """resnets_utils turns oneDNN on (why: the comment above its TensorFlow import), and a TF_ENABLE_ONEDNN_OPTS the
    user set still wins. It can only fail on a CPU where TensorFlow leaves oneDNN off by itself (AVX2-only)."""
    code = "import resnets_utils\nfrom tensorflow.python.util import _pywrap_util_port\nprint(_pywrap_util_port.IsMklEnabled())"
    without = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    for setting, expected in ((None, "True"), ("0", "False")):
        env = without if setting is None else {**without, "TF_ENABLE_ONEDNN_OPTS": setting}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [expected], f"TF_ENABLE_ONEDNN_OPTS={setting}: oneDNN on? {result.stdout!r}"


def test_plot_model_says_what_to_install_without_graphviz(monkeypatch, tmp_path):
    monkeypatch.setattr(ru.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"needs Graphviz's `dot`.*apt-get install graphviz"):
        ru.plot_model(ru.deep_stack(1, True), tmp_path / "model.png")


def test_plot_model_draws_a_block(tmp_path):
    if ru.shutil.which("dot") is None:
        pytest.fail("Graphviz's `dot` is not installed; .ci/run installs it (apt-get install graphviz)")
    x = ru.keras.Input((8, 8, 4))
    ru.plot_model(ru.keras.Model(x, ru.identity_block(x, 3, [2, 2, 4])), tmp_path / "block.png")
    assert (tmp_path / "block.png").stat().st_size > 1000


def test_failed_download_gets_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(ru.keras.utils, "get_file", offline)
    monkeypatch.setenv(sd.SOURCE_ENV, "https://example.invalid/archive.zip")
    with pytest.raises(sd.DatasetError, match=r"Could not download .* \(network unreachable\)\. Download .* by hand and set SIGNS_SOURCE"):
        sd.find_source()


def test_one_hot_accepts_course_shapes():
    np.testing.assert_array_equal(ru.convert_to_one_hot(np.array([[2, 0]]), 3), [[0, 0, 1], [1, 0, 0]])


def test_cost_per_stage_adds_up():
    model = ru.ResNet50()
    stages = ru.cost_per_stage(model)
    assert [row[0] for row in stages] == ["stage 1 (stem)", "stage 2", "stage 3", "stage 4", "stage 5", "head"]
    assert [row[1] for row in stages] == [(15, 15, 64), (15, 15, 256), (8, 8, 512), (4, 4, 1024), (2, 2, 2048), (6,)]
    assert sum(row[2] for row in stages) == model.count_params() == 23_600_006
    # The stem's 7x7 conv: 32x32 positions x 7x7 window x 3 in x 64 out; the head's Dense: 2048 x 6.
    assert stages[0][3] == 32 * 32 * 7 * 7 * 3 * 64
    assert stages[-1][3] == 2048 * 6


def test_deep_stack_differs_only_by_the_skip_connections():
    plain, residual = ru.deep_stack(3, residual=False), ru.deep_stack(3, residual=True)
    assert plain.count_params() == residual.count_params()
    assert sum(type(l).__name__ == "Add" for l in residual.layers) == 3
    assert not any(type(l).__name__ == "Add" for l in plain.layers)
    for a, b in zip(plain.get_weights(), residual.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_show_samples_draws_one_row_per_class():
    x = np.zeros((12, 64, 64, 3), dtype=np.uint8)
    fig = ru.show_samples(x, np.array([[0, 1, 2] * 4]), [0, 1, 2], n_per_class=4)
    assert len(fig.axes) == 12
    assert fig.axes[0].get_ylabel() == "y = 0"


def test_expect_prints_the_claim_when_it_holds(capsys):
    ru.expect("the residual network trains better", True, "0.94 against 0.51")
    assert capsys.readouterr().out == "✓ the residual network trains better\n"


def test_expect_names_the_claim_and_the_numbers_when_it_does_not():
    with pytest.raises(ru.ExpectationFailed, match=r"Expected: test accuracy of at least 96%\. It does not hold; measured: 91.7%\."):
        ru.expect("test accuracy of at least 96%", False, "91.7%")
    with pytest.raises(AssertionError):  # a plain assert-style failure for pytest and nbval
        ru.expect("anything", False)
