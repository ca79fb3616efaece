"""CUDA checks, run on a GPU machine with ``python -m pytest -m gpu tests/gpu`` (about a minute).

bf16 autocast and channels_last (the loop's defaults on CUDA) through masking, regrowth and compaction; the
masked and the compact model agreeing on the GPU; a compact model trained on the GPU scoring the same on
the CPU; and two trials sharing one GPU in a sweep. The default test run deselects the ``gpu`` marker. Run
on purpose without a CUDA device, these tests fail: a GPU check must not pass by finding no GPU.
"""

from __future__ import annotations

import pytest
import torch

from chex_tune import load_compact
from chex_tune.config import RunConfig
from chex_tune.core.flops import count_macs
from chex_tune.train.data import load_data
from chex_tune.train.evaluate import evaluate
from chex_tune.train.loop import train

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
        "train_subset": 512, "val_size": 256, "sparsity": 0.5, "regrow_ratio": 0.2, "period": 2,
        "explore_until": 0.6, "lr": 0.05, "device": "cuda", "seed": 0}


@pytest.fixture(autouse=True)
def cuda_device():
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device: run them on a GPU machine"


def tiny(**changes) -> RunConfig:
    return RunConfig.from_dict({**TINY, **changes})


@pytest.mark.parametrize(("amp", "channels_last"), [(True, True), (False, False)], ids=["bf16-channels-last", "fp32"])
def test_a_chex_run_on_cuda_compacts_to_its_budget_and_scores_the_same_on_the_cpu(tmp_path, amp, channels_last):
    result = train(tiny(amp=amp, channels_last=channels_last, epochs=4), tmp_path)
    assert result.device.startswith("cuda")
    assert len(result.history) == 4 and all(torch.isfinite(torch.tensor(m["train_loss"])) for m in
                                               result.history)
    model = load_compact(tmp_path / "compact.pt")  # on the CPU, float32
    data = load_data(tiny(device="cpu").train, "cpu")
    assert count_macs(model, data.example_input()[:1]) == result.macs < result.dense_macs
    # bf16 on the GPU against float32 on the CPU: a few of 256 predictions may flip, no more
    tolerance = 8 / 256 if amp else 2 / 256
    assert abs(evaluate(model, data, "val") - result.val_acc) <= tolerance
    assert result.val_acc > 0.3  # 10 classes: it learned something


def test_the_compact_model_scores_like_the_masked_one_on_cuda(tmp_path):
    result = train(tiny(amp=False, compact_after_explore=False), tmp_path)
    assert abs(result.val_acc - result.val_acc_masked) <= 1 / 256  # other kernels, not other weights


def test_two_trials_share_one_gpu_at_half_a_gpu_each(tmp_path):
    from mlflow import MlflowClient

    from chex_tune.tuning.space import SearchSpace
    from chex_tune.tuning.sweep import SweepOptions, run_sweep
    from chex_tune.tuning.track.store import default_tracking_uri

    space = SearchSpace.from_dict({
        "fixed": {key: value for key, value in TINY.items() if key not in ("sparsity", "device", "seed")},
        "search": {"sparsity": {"low": 0.3, "high": 0.7}},
        "objectives": ["val_acc:max", "macs:min"]}, source="gpu")
    store = tmp_path / "store"
    result = run_sweep(space, SweepOptions(trials=2, concurrent=2, gpus_per_trial=0.5, store=str(store),
                                           experiment="shared-gpu", optuna_sampler="random"), log=lambda _m: None)
    client = MlflowClient(tracking_uri=default_tracking_uri(store))
    runs = client.search_runs([client.get_experiment_by_name("shared-gpu").experiment_id],
                              filter_string="tags.`chex.trial_id` LIKE '%'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}, result
    assert {r.data.params["device"] for r in runs} == {"cuda"}
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time  # they ran at the same time, on one GPU
