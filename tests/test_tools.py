"""The measurement scripts' bookkeeping (their training runs are measurements, not tests)."""

import dataclasses
import importlib.util
from pathlib import Path

import resnets_train as rt

_spec = importlib.util.spec_from_file_location("ablation", Path(__file__).resolve().parents[1] / "tools" / "ablation.py")
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)


def test_ablation_reuses_runs_stored_before_a_recipe_setting_existed():
    stored = dataclasses.asdict(rt.DEFAULT)
    del stored["zero_init_residual"]  # a run saved before the setting was added: it ran with the default
    assert ablation.same_recipe(stored, rt.DEFAULT)
    assert not ablation.same_recipe(stored, dataclasses.replace(rt.DEFAULT, zero_init_residual=True))
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
