"""A sweep on a real multi-node Ray cluster, reached with ``--ray-address`` as a user's cluster would be.

Two Ray nodes (a head and a worker, separate raylets with one CPU each) run on this machine through
``ray.cluster_utils.Cluster``; the sweep is a separate driver process, interrupted once and resumed.
"""

from __future__ import annotations

import subprocess

import pytest
from test_sweep import child_runs, client_of, interrupt_after_first_trial, study_trials, sweep_process

from chex_tune import load_compact
from chex_tune.tuning.track.store import default_tracking_uri, using_tracking_uri

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_a_sweep_on_a_two_node_cluster_runs_trials_on_both_nodes_logs_everything_and_resumes(tmp_path, cluster):
    nodes = {node.node_id for node in cluster.list_all_nodes()}
    assert len(nodes) == 2
    store, command, env = sweep_process(tmp_path, "cluster", epochs=4)
    command = [*command, "--ray-address", cluster.address, "--concurrent", "2", "--cpus-per-trial", "1"]
    returncode, output = interrupt_after_first_trial(command, env)  # then resume on the same cluster
    assert returncode == 130, output
    finished = {r.info.run_id for r in child_runs(client_of(store), "cluster") if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 4, output

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    client = client_of(store)
    runs = child_runs(client, "cluster")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, resumed.stdout
    assert finished <= {r.info.run_id for r in runs}  # not re-run on resume
    ran_on = {r.data.params["ray_node"] for r in runs}
    assert ran_on == nodes, (ran_on, nodes)  # both nodes trained trials (two at a time, one CPU each)
    for run in runs:
        assert {"val_acc", "test_acc", "macs", "params", "latency_ms"} <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"compact.pt", "widths.json", "metrics.json", "config.yaml", "chex.yaml"} <= artifacts, artifacts
        model = load_compact(client.download_artifacts(run.info.run_id, "compact.pt", str(tmp_path / run.info.run_id)))
        assert sum(p.numel() for p in model.parameters()) == run.data.metrics["params"]
    with using_tracking_uri(default_tracking_uri(store)):  # the MLflow model of a trial the worker node trained
        import mlflow.pytorch

        worker_run = next(r for r in runs if r.data.params["ray_node"] != cluster.head_node.node_id)
        assert mlflow.pytorch.load_model(f"runs:/{worker_run.info.run_id}/model") is not None
    parent = client.search_runs([runs[0].info.experiment_id], "tags.`chex.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    states = [t.state.name for t in study_trials(store, parent[0].data.tags["chex.sweep"])]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states, states
