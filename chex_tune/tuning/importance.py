"""Which searched settings mattered: Optuna's parameter importance, per objective, at the end of a sweep.

Users see whether the CHEX period, regrow ratio or budget moved accuracy and cost on their task (a
setting with no importance can be fixed in the next sweep's space). Optuna's fANOVA evaluator (seeded:
the same sweep gives the same figures) is used on the sweep's finished trials; stopped and failed
trials take no part. On a handful of trials the figures are rough; they firm up with more.
"""

from __future__ import annotations

import logging
import time
import warnings

logger = logging.getLogger(__name__)

MIN_TRIALS = 3  # fewer finished trials say nothing about importance


def searched_importance(storage: str, study_name: str, objectives) -> dict[str, dict[str, float]] | None:
    """{objective: {parameter: importance}} of the study ``study_name``; None with too few finished trials or
    nothing searched (the reason is logged, never raised: importance is a report, not the sweep's result)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        searched = {name for trial in finished for name in trial.distributions}
        if len(finished) < MIN_TRIALS or not searched:
            logger.info("parameter importance: %d finished trials over %d searched settings; needs >= %d trials "
                        "and one setting", len(finished), len(searched), MIN_TRIALS)
            return None
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-API and single-value warnings
            for index, objective in enumerate(objectives):
                scores = optuna.importance.get_param_importances(
                    study, target=lambda trial, i=index: trial.values[i], normalize=True,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
                out[objective.name] = {name: float(value) for name, value in scores.items()}
        return out
    except Exception as exc:  # noqa: BLE001 - e.g. all values equal; the sweep's results stand without it
        logger.info("parameter importance not computed: %s: %s", type(exc).__name__, exc)
        return None


def log_importance(client, parent_run_id: str, importance: dict[str, dict[str, float]], log) -> None:
    """On the parent run (metrics ``importance.<objective>.<parameter>`` and ``importance.json``), and as lines."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"importance.{objective}.{name}", value, now, 0)
               for objective, scores in importance.items() for name, value in scores.items()]
    client.log_batch(parent_run_id, metrics=metrics)
    client.log_dict(parent_run_id, importance, "importance.json")
    for objective, scores in importance.items():
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        log(f"parameter importance for {objective}: {', '.join(f'{n} {v:.2f}' for n, v in ranked)}")
