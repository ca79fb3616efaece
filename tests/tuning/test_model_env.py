"""A trial's logged MLflow model works where chex-tune is not installed: its own environment is enough.

A fresh virtual environment gets exactly the model's ``requirements.txt`` (what ``mlflow models serve``
would install), then loads the model through MLflow's pyfunc flavour and predicts its input example;
the answer must equal the compact model's own, computed here.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from chex_tune import load_compact
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep
from chex_tune.tuning.track.store import default_tracking_uri, using_tracking_uri

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1200)]

SPACE = {"fixed": {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 1, "batch_size": 32,
                   "train_subset": 64, "val_size": 32},
         "search": {"sparsity": {"low": 0.4, "high": 0.6}}, "objectives": ["val_acc:max", "macs:min"]}

PREDICT = """
import importlib.util, json, sys
import numpy as np
import mlflow.pyfunc
missing = [name for name in ("chex_tune", "timm", "torch_pruning") if importlib.util.find_spec(name) is not None]
assert not missing, f"the fresh environment should not have {missing}"
model_dir, out = sys.argv[1], sys.argv[2]
example = np.asarray(json.load(open(f"{model_dir}/input_example.json")), dtype=np.float32)
np.save(out, mlflow.pyfunc.load_model(model_dir).predict(example))
"""


def test_the_logged_mlflow_model_loads_and_predicts_in_a_fresh_venv_with_only_its_requirements(tmp_path):
    import mlflow.artifacts
    from mlflow.models import get_model_info

    store = tmp_path / "store"
    result = run_sweep(SearchSpace.from_dict(SPACE, source="synthetic"),
                       SweepOptions(trials=1, concurrent=1, store=str(store), experiment="env",
                                   optuna_sampler="random"),
                       log=lambda _m: None)
    run_id = result.rows[0].run_id
    uri = default_tracking_uri(store)
    with using_tracking_uri(uri):  # the run's logged model (MLflow 3: a model of its own, linked to the run)
        model_uri = get_model_info(f"runs:/{run_id}/model").model_uri
        model_dir = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "model"))
    compact = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/compact.pt", dst_path=str(tmp_path),
                                                  tracking_uri=uri)
    requirements = pathlib.Path(model_dir, "requirements.txt").read_text().split()
    assert {line.split("==")[0] for line in requirements} == {"mlflow", "torch", "numpy"}  # no chex-tune pin

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "-r", f"{model_dir}/requirements.txt"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    script = tmp_path / "predict.py"
    script.write_text(PREDICT)
    served = subprocess.run([str(venv / "bin" / "python"), str(script), model_dir, str(tmp_path / "y.npy")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert served.returncode == 0, served.stderr[-3000:]

    example = torch.tensor(json.loads(pathlib.Path(model_dir, "input_example.json").read_text()))
    with torch.no_grad():
        expected = load_compact(compact)(example.float()).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-5)
