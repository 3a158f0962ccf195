"""tf.distribute without a GPU: two replicas on one CPU split in two, and two workers on loopback that lose one.

Each case runs in its own process: logical devices and TF_CONFIG must be set before TensorFlow starts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TWO_CPU_REPLICAS = """
import json, sys
import resnets_utils as ru
from resnets_utils import keras, layers, tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import dataclasses
import numpy as np
import resnets_train as rt
data = ru.load_dataset()
"""


SMALL_NETWORK = """
def small():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = layers.MaxPooling2D()(layers.Conv2D(16, 5, strides=2, activation="relu")(inputs))
    x = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu")(x))
    return keras.Model(inputs, layers.Dense(6, activation="softmax")(layers.Flatten()(x)))
"""


def _run(script: str, env=None, timeout=600) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_replicas_take_the_same_step_as_one_device_with_their_global_batch():
    """A network without batch norm, one step on 60 photos: two replicas of 30 must compute what one device
    computes on all 60 (the gradients are averaged over the global batch, not summed or taken from one
    replica). Only the order of floating-point sums differs: 1e-5 on weights of about 0.1."""
    result = _run(TWO_CPU_REPLICAS + SMALL_NETWORK + """
recipe = dataclasses.replace(rt.COURSE, epochs=1)
initial = small().get_weights()
single = rt.train(rt.for_replicas(recipe, 2), seed=0, verbose=0, data=data, train_per_class=10, model=small())
strategy = rt.make_strategy("mirrored")
with strategy.scope():
    model = small()
mirrored = rt.train(recipe, seed=0, verbose=0, data=data, train_per_class=10, model=model, strategy=strategy)
step = max(np.abs(a - b).max() for a, b in zip(single["model"].get_weights(), initial))
apart = max(np.abs(a - b).max() for a, b in zip(single["model"].get_weights(), mirrored["model"].get_weights()))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "batch": mirrored["recipe"]["batch_size"], "step": float(step),
                  "apart": float(apart), "loss": [single["history"]["loss"][0], mirrored["history"]["loss"][0]]}))
""")
    assert result["replicas"] == 2 and result["batch"] == 64
    assert result["step"] > 1e-3, "the step moved the weights"
    assert result["apart"] < 1e-5, result
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-5)


def test_resnet50_recipe_on_two_replicas_scales_batch_and_learning_rate():
    """The real recipe on two replicas: batch 32 each (64 in all), learning rate doubled, and the first step's
    loss as on one device with batch 64, within 5%: each replica normalises its own 30 photos (batch norm per
    replica), which moved it by 2.2% here; without batch norm the two agree to 1e-5 (the test above)."""
    result = _run(TWO_CPU_REPLICAS + """
recipe = dataclasses.replace(rt.DEFAULT, epochs=1, validation_per_class=0, restore_best=False)
single = rt.train(rt.for_replicas(recipe, 2), seed=0, verbose=0, data=data, train_per_class=10)
mirrored = rt.train(recipe, seed=0, verbose=0, data=data, train_per_class=10, strategy=rt.make_strategy("mirrored"))
print(json.dumps({"recipe": mirrored["recipe"], "replicas": mirrored["replicas"], "strategy": mirrored["strategy"],
                  "loss": [single["history"]["loss"][0], mirrored["history"]["loss"][0]]}))
""")
    assert result["strategy"] == "mirrored" and result["replicas"] == 2
    assert result["recipe"]["batch_size"] == 64 and result["recipe"]["learning_rate"] == pytest.approx(4e-3)
    assert result["loss"][1] == pytest.approx(result["loss"][0], rel=0.05), result["loss"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER = """
import json, sys
from pathlib import Path
import dataclasses
import resnets_utils as ru
import resnets_train as rt
strategy = rt.make_strategy("multi-worker")
recipe = dataclasses.replace(rt.DEFAULT, epochs=int(sys.argv[3]), validation_per_class=4)
result = rt.train(recipe, seed=0, output_dir=Path(sys.argv[1]), verbose=0, train_per_class=20, strategy=strategy,
                  backup_dir=Path(sys.argv[2]))
print(json.dumps({"epochs_run": result["epochs_run"], "replicas": result["replicas"], "chief": rt.is_chief(strategy)}))
"""


SMALL_WORKER = """
import json, sys, dataclasses
import numpy as np
import resnets_train as rt
from resnets_utils import keras, layers
strategy = rt.make_strategy("multi-worker")
""" + SMALL_NETWORK + """
with strategy.scope():
    model = small()
result = rt.train(dataclasses.replace(rt.COURSE, epochs=1), seed=0, verbose=0, train_per_class=10, model=model, strategy=strategy)
np.savez(sys.argv[1], *model.get_weights())
print(json.dumps({"replicas": result["replicas"], "batch": result["recipe"]["batch_size"]}))
"""


def test_two_workers_take_the_same_step_as_one_device(tmp_path):
    """The cluster version of the first test: two worker processes of 30 photos each against one device
    with all 60, one step of a network without batch norm; the same weights to 1e-5 (summation order)."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", SMALL_WORKER, str(tmp_path / f"weights{index}.npz")], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    single = _run("""
import json, dataclasses, sys
import numpy as np
import resnets_train as rt
from resnets_utils import keras, layers
""" + SMALL_NETWORK + """
initial = small().get_weights()
result = rt.train(rt.for_replicas(dataclasses.replace(rt.COURSE, epochs=1), 2), seed=0, verbose=0, train_per_class=10, model=small())
np.savez(sys.argv[1] if len(sys.argv) > 1 else "%s", *result["model"].get_weights())
print(json.dumps({"step": float(max(np.abs(a - b).max() for a, b in zip(result["model"].get_weights(), initial)))}))
""" % (tmp_path / "single.npz"))
    for process in workers:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
        assert json.loads(output.strip().splitlines()[-1]) == {"replicas": 2, "batch": 64}
    import numpy as np

    expected = np.load(tmp_path / "single.npz")
    assert single["step"] > 1e-3
    for index in range(2):
        got = np.load(tmp_path / f"weights{index}.npz")
        apart = max(np.abs(expected[k] - got[k]).max() for k in expected.files)
        assert apart < 1e-5, (index, apart)


def _start_workers(tmp_path, ports, epochs, round_):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = open(tmp_path / f"worker{index}-{round_}.log", "w+")
        workers.append((subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"out{index}"), str(tmp_path / "backup"),
                                          str(epochs)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True), log))
    return workers


def _finish(workers, timeout):
    outputs = []
    for process, log in workers:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        outputs.append((process.returncode, log.read()))
    return outputs


def test_two_workers_resume_after_one_is_killed(tmp_path):
    """MultiWorkerMirroredStrategy with two processes on loopback ports. Worker 1 is killed once the state
    after epoch 2 of 4 is backed up; the cluster (here: this test) stops worker 0, which cannot go on
    alone, and starts both again; they resume from the chief's backup (the only one), run only the epochs
    left, the same number on both, and only the chief (worker 0) writes the run."""
    ports, epochs = _free_ports(2), 4
    workers = _start_workers(tmp_path, ports, epochs, "first")
    metadata = tmp_path / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p, _ in workers):
            break
        try:
            if json.loads(metadata.read_text())["epoch"] >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    assert all(p.poll() is None for p, _ in workers), _finish(workers, 1)
    backed_up = json.loads(metadata.read_text())["epoch"]
    assert 2 <= backed_up < epochs
    workers[1][0].send_signal(signal.SIGKILL)
    first = _finish(workers, timeout=60)  # worker 0 fails at its next collective (or is stopped after 60 s)
    assert first[0][0] != 0 and first[1][0] == -signal.SIGKILL, first[0][1][-2000:]
    assert not (tmp_path / "out0" / "metrics.json").exists()
    assert not [p for p in (tmp_path / "backup").iterdir() if p.is_dir()], "one backup, the chief's: no copy per worker"

    second = _finish(_start_workers(tmp_path, ports, epochs, "second"), timeout=400)
    for returncode, output in second:
        assert returncode == 0, output[-3000:]
    results = [json.loads(output.strip().splitlines()[-1]) for _, output in second]
    assert [r["chief"] for r in results] == [True, False] and results[0]["replicas"] == 2
    resumed = results[0]["epochs_run"]
    assert results[1]["epochs_run"] == resumed, "both workers resumed from the same epoch"
    assert epochs - backed_up - 1 <= resumed <= epochs - backed_up, (backed_up, resumed)  # not started over
    metrics = json.loads((tmp_path / "out0" / "metrics.json").read_text())
    assert metrics["strategy"] == "multi-worker" and metrics["recipe"]["batch_size"] == 64
    assert (tmp_path / "out0" / "model.keras").is_file()
    assert not any((tmp_path / "out1").glob("*")), "only the chief writes the run"
    assert not (tmp_path / "backup").exists(), "the backup is removed when the run finishes"
