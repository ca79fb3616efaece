"""A sweep against a real MLflow tracking server (its own backend and artifact store), then pareto, export and
the registry through it: what a team with a shared server does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
import yaml

from chex_tune.cli import main
from chex_tune.tuning.track.store import using_tracking_uri

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

SPACE = {
    "fixed": {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
              "train_subset": 128, "val_size": 64, "lr": 0.05},
    "search": {"sparsity": {"low": 0.3, "high": 0.7}},
    "objectives": ["val_acc:max", "macs:min"],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
    yield uri
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_sweep_pareto_export_and_registry_work_against_a_tracking_server(server, tmp_path, capsys):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    store = tmp_path / "store"  # Ray's state and the Optuna study stay local; MLflow is the server
    assert main(["sweep", str(space_file), "--trials", "2", "--concurrent", "1", "--optuna-sampler", "random",
                 "--tracking-uri", server, "--store", str(store), "--experiment", "shared"]) == 0
    assert not (store / "mlflow.db").exists()  # nothing went to a local database
    capsys.readouterr()

    assert main(["pareto", "shared", "--tracking-uri", server, "--format", "json",
                 "--plot", str(tmp_path / "front.png")]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front["finished"] == 2 and len(front["front"]) >= 1

    out = tmp_path / "model.pt"
    assert main(["export", "shared", "--tracking-uri", server, "--min-acc", "0.01", "--format", "state", "-o", str(out),
                 "--register", "shared-model", "--alias", "champion"]) == 0
    from chex_tune import load_compact

    exported = load_compact(out)
    import mlflow.pytorch

    with using_tracking_uri(server):  # the registered alias serves the model, through the server
        served = mlflow.pytorch.load_model("models:/shared-model@champion")
    x = torch.randn(2, *exported.chex_recipe["input_shape"][1:])
    with torch.no_grad():
        torch.testing.assert_close(served(x), exported.eval()(x), rtol=1e-4, atol=1e-5)
