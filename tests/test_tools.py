"""The measurement scripts' bookkeeping (their training runs are measurements, not tests)."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import resnets_train as rt
import resnets_utils as ru

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import measurements  # noqa: E402

_spec = importlib.util.spec_from_file_location("ablation", Path(__file__).resolve().parents[1] / "tools" / "ablation.py")
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)
_spec = importlib.util.spec_from_file_location("gradcam_backbones", Path(__file__).resolve().parents[1] / "tools" / "gradcam_backbones.py")
gradcam_backbones = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gradcam_backbones)


def test_ablation_reuses_runs_stored_before_a_recipe_setting_existed():
    stored = dataclasses.asdict(rt.DEFAULT)
    del stored["batch_size"]  # as if saved before the setting existed: it ran with the setting's default
    assert ablation.same_recipe(stored, rt.DEFAULT)
    assert not ablation.same_recipe(stored, dataclasses.replace(rt.DEFAULT, batch_size=16))
    assert not ablation.same_recipe({**stored, "augment": False}, rt.DEFAULT)


def test_ablation_table_has_a_row_per_measured_variant_in_order():
    by_epoch = [epoch / 100 for epoch in range(1, 21)]  # after epoch n: n%
    results = {
        "no validation split: all 1,080 photos, last epoch kept": {"test_accuracy": 0.8, "best_epoch": None, "test_accuracy_by_epoch": by_epoch},
        "default recipe": {"test_accuracy": 0.9, "best_epoch": 17, "test_accuracy_by_epoch": by_epoch},
    }
    header, _, *rows = ablation.table(results).splitlines()
    assert header.startswith("| recipe, seed 0, 20 epochs |")  # the runs' length, not the current default's
    assert rows == [
        "| default recipe | 5.0% | 10.0% | 15.0% | 90.0% (epoch 17) |",
        "| no validation split: all 1,080 photos, last epoch kept | 5.0% | 10.0% | 15.0% | 80.0% (epoch 20) |",
    ]


def test_gradcam_backbones_table_has_a_row_per_network():
    def on_hand(mass, peaks, photos):
        return {"hand_share": 0.2, "mass_on_hand": mass, "peak_on_hand": peaks, "photos": photos}

    result = {"model": "runs/a/model.keras", "test_accuracy": 0.975, "own_task": on_hand(0.35, 55, 120),
              "transfer_head_accuracy": 0.725, "transfer_accuracy": 0.7875, "transferred": on_hand(0.19, 14, 80)}
    header, _, *rows = gradcam_backbones.table([result, {**result, "model": "runs/b/model.keras"}]).splitlines()
    assert header.count("|") == 6
    assert rows[0] == ("| runs/a/model.keras | 97.5% | 35.0% (hand 20.0%), 55 of 120 | 72.5%, 78.8% "
                       "| 19.0% (hand 20.0%), 14 of 80 |")
    assert rows[1].startswith("| runs/b/model.keras |")


def test_gradcam_backbones_names_a_missing_model_before_measuring(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        gradcam_backbones.main([str(tmp_path / "nowhere.keras"), "--output", str(tmp_path / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "no such model file" in error and "nowhere.keras" in error and "make train" in error
    assert not (tmp_path / "out").exists()


def test_zero_init_residual_starts_every_block_as_its_shortcut():
    model = rt.build_model(rt.Recipe(name="zero", epochs=1), steps_per_epoch=1)
    zero_init = measurements.ZeroInitResidual()
    zero_init.set_model(model)
    zero_init.on_train_begin()
    zeroed = measurements.residual_branch_norms(model)
    assert len(zeroed) == 16  # 3 + 4 + 6 + 3 blocks
    assert all(not np.any(norm.gamma.numpy()) for norm in zeroed)
    others = [layer for layer in model.layers if isinstance(layer, ru.layers.BatchNormalization) and layer not in zeroed]
    assert len(others) == 53 - 16 and all(np.all(layer.gamma.numpy() == 1) for layer in others)
    # a block whose main path ends at zero outputs ReLU(shortcut): check the first identity block
    first_identity_add = [layer for layer in model.layers if isinstance(layer, ru.layers.Add)][1]
    shortcut, output = first_identity_add.input[1], model.get_layer(first_identity_add.name).output
    probe = ru.keras.Model(model.input, [shortcut, output])
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    shortcut_value, sum_value = probe.predict(x, verbose=0)
    np.testing.assert_allclose(sum_value, shortcut_value, atol=1e-6)


def test_residual_branch_norms_says_when_a_block_has_no_batch_norm_at_its_end():
    inputs = ru.keras.Input((8, 8, 3))
    outputs = ru.layers.Add()([ru.layers.Conv2D(3, 1)(inputs), inputs])
    with pytest.raises(ValueError, match="expected its first input to come from a BatchNormalization"):
        measurements.residual_branch_norms(ru.keras.Model(inputs, outputs))


# ----------------------------------------------------------------------------------------------------
# tools/fuzz.py: a short, seeded run of each fuzzer (the full runs are in docs/results.md)
# ----------------------------------------------------------------------------------------------------
import fuzz  # noqa: E402


def test_image_fuzzer_finds_no_crash_in_a_short_seeded_run(tmp_path, monkeypatch):
    monkeypatch.setattr(fuzz, "OUTPUT", tmp_path)
    report = fuzz.fuzz_images(400, seed=0)
    assert report["tried"] == 400 and report["failures"] == 0, report["failure_kinds"]
    decoded = sum(n for outcome, n in report["outcomes"].items() if outcome.endswith("decoded"))
    assert decoded >= 20 and len(report["outcomes"]) >= 15, report["outcomes"]  # both valid files and every kind of refusal


def test_image_fuzzer_reports_a_decoder_error_that_escapes(tmp_path, monkeypatch):
    """Its check can fail: with prepare_image letting a decoder's own exception out, the fuzzer counts crashes."""
    import signs_dataset as sd

    def leaky(data):
        raise RuntimeError("decoder state error")  # what Pillow's AVIF decoder raised before the format allowlist

    monkeypatch.setattr(fuzz, "OUTPUT", tmp_path)
    monkeypatch.setattr(sd, "prepare_image", leaky)
    report = fuzz.fuzz_images(50, seed=0)
    assert report["failures"] == 50 and (tmp_path / "images-00.bin").is_file()


def test_http_fuzzer_finds_no_5xx_in_a_short_seeded_run(tmp_path, monkeypatch, stand_in_model_file):
    monkeypatch.setattr(fuzz, "OUTPUT", tmp_path)
    report = fuzz.fuzz_http(300, seed=0, model=stand_in_model_file)
    assert report["failures"] == 0, report["failure_kinds"]
    assert report["health_after"] == "answers 200"
    assert any(outcome.startswith("HTTP 200") for outcome in report["outcomes"]) and len(report["outcomes"]) >= 5, report["outcomes"]


import run_notebooks  # noqa: E402


@pytest.mark.parametrize("code, says", [("import time\ntime.sleep(60)", "timed out"), ("1 / 0", "ZeroDivisionError")])
def test_a_notebook_that_fails_or_times_out_keeps_its_outputs_and_says_why(tmp_path, capsys, code, says):
    """A cell past its limit (chapter 04's training on a slow CPU) fails like an error: stored outputs kept, the failed run beside them."""
    import nbformat

    path = tmp_path / "chapter.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('stored')"), nbformat.v4.new_code_cell(code)])
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", text="stored\n")]
    nbformat.write(notebook, path)
    before = path.read_bytes()
    assert run_notebooks.main([str(path), "--cell-timeout", "5"]) == 1
    assert path.read_bytes() == before  # the good stored outputs are kept
    failed = nbformat.read(run_notebooks.failed_path(path), as_version=4)
    assert failed.cells[0].outputs[0]["text"] == "stored\n"  # the failed run, beside them, got that far
    assert f"error: {path} failed" in (err := capsys.readouterr().err) and says in err


def test_serving_benchmark_refuses_a_batch_of_no_photos_before_loading_anything(capsys):
    import serving_benchmark

    with pytest.raises(SystemExit) as exit_info:
        serving_benchmark.main(["--batches", "1", "0", "--model", "no-such-model.keras"])
    assert exit_info.value.code == 2
    assert "--batches: each is a number of photos, at least 1; got 0" in capsys.readouterr().err


def test_serving_benchmark_says_where_to_put_the_archive_when_it_is_missing(monkeypatch, capsys):
    import serving_benchmark

    def no_archive(download=True):
        raise serving_benchmark.sd.DatasetError("No source archive found. Set SIGNS_SOURCE=...")

    monkeypatch.setattr(serving_benchmark.sd, "find_source", no_archive)
    assert serving_benchmark.main(["--model", "no-such-model.keras"]) == 1
    assert "error: No source archive found. Set SIGNS_SOURCE" in capsys.readouterr().err
