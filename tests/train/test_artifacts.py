"""A trial's config.yaml: the run's settings without the targets of budgets it does not use, still a RunConfig."""

from __future__ import annotations

import pytest
import yaml

from chex_tune.config import RunConfig
from chex_tune.train.artifacts import RUN_CONFIG, dataset_settings, without_unused_budgets
from chex_tune.train.loop import train

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 1, "batch_size": 32,
        "train_subset": 128, "val_size": 64, "regrow_ratio": 0.1, "period": 2, "explore_until": 0.6,
        "lr": 0.05, "device": "cpu", "seed": 0}


def test_a_macs_run_writes_no_sparsity_and_its_config_yaml_rebuilds_the_run(tmp_path):
    config = RunConfig.from_dict({**TINY, "macs_target": 0.5, "sparsity": 0.7})
    train(config, tmp_path)
    saved = dataset_settings((tmp_path / RUN_CONFIG).read_text())  # what export reads
    assert saved["macs_target"] == 0.5
    assert "sparsity" not in saved and "latency_target" not in saved
    rebuilt = RunConfig.from_dict(saved)
    assert rebuilt == config.replace(sparsity=RunConfig().chex.sparsity, stem=saved["stem"])


@pytest.mark.parametrize(("given", "dropped", "kept"), [
    ({"sparsity": 0.6, "macs_target": None, "latency_target": None}, set(),
     {"sparsity", "macs_target", "latency_target"}),
    ({"sparsity": 0.5, "macs_target": 0.25, "latency_target": None}, {"sparsity", "latency_target"},
     {"macs_target"}),
    ({"sparsity": 0.5, "macs_target": None, "latency_target": "4ms"}, {"sparsity", "macs_target"},
     {"latency_target"}),
])
def test_only_the_chosen_budgets_target_is_kept(given, dropped, kept):
    values = {**RunConfig().to_dict(), **given}
    written = without_unused_budgets(values)
    assert not dropped & set(written) and kept <= set(written)
    assert set(values) - set(written) == dropped
    assert {k: written[k] for k in kept} == {k: values[k] for k in kept}
    assert yaml.safe_load(yaml.safe_dump(written)) == written
