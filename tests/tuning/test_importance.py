"""Parameter importance per objective, read from a sweep's Optuna study (as the end of a sweep does)."""

from __future__ import annotations

import optuna
import pytest

from chex_tune.tuning.importance import searched_importance
from chex_tune.tuning.objectives import parse_objectives


def study_in(storage: str, name: str, trials: int):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    # val_acc depends on period only, macs on macs_target only; regrow_ratio on neither
    study.optimize(lambda t: (t.suggest_int("period", 8, 64) / 64, t.suggest_float("macs_target", 0.1, 0.6)
                              + 0 * t.suggest_float("regrow_ratio", 0.0, 0.3)), n_trials=trials)
    return study


def test_each_objective_names_the_setting_that_drives_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # an Optuna storage URL, as a sweep passes it
    study_in(storage, "s", 20)
    scores = searched_importance(storage, "s", parse_objectives("val_acc:max,macs:min"))
    assert max(scores["val_acc"], key=scores["val_acc"].get) == "period"
    assert max(scores["macs"], key=scores["macs"].get) == "macs_target"
    for objective in ("val_acc", "macs"):
        assert set(scores[objective]) == {"period", "macs_target", "regrow_ratio"}
        assert sum(scores[objective].values()) == pytest.approx(1.0)


def test_too_few_finished_trials_or_no_study_give_none_not_an_error(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study_in(storage, "tiny", 2)
    assert searched_importance(storage, "tiny", parse_objectives("val_acc:max,macs:min")) is None
    assert searched_importance(storage, "absent", parse_objectives("val_acc:max,macs:min")) is None
