"""Search spaces: the shipped YAML files, the schema's validation, and what a space hands to a sweep."""

from __future__ import annotations

import math
import subprocess
import sys

import optuna
import pytest
import yaml

from chex_tune.config import ChexConfig, RunConfig
from chex_tune.train.metrics import BUILTIN_OBJECTIVES
from chex_tune.tuning.objectives import Objective, parse_objectives
from chex_tune.tuning.param import Param
from chex_tune.tuning.space import SEARCH_SPACES_DIR, SearchSpace

SHIPPED = sorted(p.name for p in SEARCH_SPACES_DIR.glob("*.yaml"))


def minimal(**changes) -> dict:
    """A small valid space; ``changes`` replace its top-level entries (None removes one)."""
    data = {"fixed": {"epochs": 3},
            "search": {"sparsity": {"low": 0.3, "high": 0.8}, "regrow_ratio": {"low": 0.0, "high": 0.3},
                       "period": {"low": 4, "high": 64, "log": True, "int": True}}}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def with_search(**params) -> dict:
    return minimal(search={**minimal()["search"], **params})


# ------------------------------------------------------------------------------------ shipped spaces
def test_the_five_spaces_ship():
    assert SHIPPED == ["fashion_mnist_mobilenetv2.yaml", "fashion_mnist_resnet18.yaml",
                       "fashion_mnist_resnet18_finetune.yaml", "fashion_mnist_resnet18_latency.yaml",
                       "imagefolder_resnet50.yaml"]


def test_the_finetune_space_is_the_measured_fine_tune_and_reaches_torch_pruning():
    from chex_tune.config import FINETUNE

    space = SearchSpace.load("fashion_mnist_resnet18_finetune")
    # a space's fixed settings win over FINETUNE's defaults, so the space repeats the measured ones
    for key in ("epochs", "lr", "initial_scorer"):
        assert space.fixed[key] == FINETUNE[key]
    # Torch-Pruning's workflow (uniform widths, kept first mask, compacted at once) is a corner of the box
    assert space.params["regrow_ratio"].low == 0.0 and "uniform" in space.params["allocator"].choices
    assert space.params["explore_until"].low == FINETUNE["explore_until"]
    # it searches distillation, so it validates without init only because a sweep brings one; with one the
    # trial is a fine-tune: norm_init off (FINETUNE), the teacher's weight as sampled
    config = space.run_config(space.midpoint(), init="dense.pt").to_dict()
    assert config["norm_init"] is None and config["distill"] == space.midpoint()["distill"] > 0
    with pytest.raises(ValueError, match="needs init"):  # where a sweep without --init is planned
        space.run_config(space.midpoint()).train.check_teacher()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_is_valid_at_its_corners_and_midpoint(name):
    space = SearchSpace.load(SEARCH_SPACES_DIR / name)
    assert space.source.endswith(name)
    assert space.description
    corners = space.sample_corners()
    assert len(corners) == math.prod(len(p.choices) if p.choices else 2 for p in space.params.values())
    trained_start = {"init": "dense.pt"} if "distill" in space.params else {}  # distillation needs a teacher
    for sampled in [*corners, space.midpoint()]:
        config = space.run_config(sampled, **trained_start)
        assert isinstance(config, RunConfig)
        values = config.to_dict()
        assert {key: values[key] for key in space.fixed} == space.fixed
        assert {key: values[key] for key in sampled} == sampled
    for param in space.params.values():  # the mid-point lies strictly inside every range, or is a choice
        if param.choices is None:
            assert param.low < space.midpoint()[param.name] < param.high
        else:
            assert space.midpoint()[param.name] in param.choices


def test_the_main_job_space_is_cpu_sized():
    space = SearchSpace.load("fashion_mnist_resnet18")  # a bare name finds a shipped space
    config = space.run_config(space.midpoint())
    assert (config.train.model, config.train.dataset, config.train.stem) == ("resnet18", "fashion-mnist", "timm")
    assert config.train.train_subset * config.train.epochs <= 50_000  # image-epochs: ~1 min on one core
    assert set(space.params) == {"macs_target", "regrow_ratio", "explore_until", "period", "allocator"}
    assert space.params["period"].log and space.params["period"].integer
    # the simple baselines stay reachable: no regrowth and uniform widths are points of the space
    assert space.params["regrow_ratio"].low == 0.0 and "uniform" in space.params["allocator"].choices
    assert [str(o) for o in space.objectives] == ["val_acc:max", "macs:min"]


def test_mobilenetv2_space_searches_the_exploration_length():
    space = SearchSpace.load(SEARCH_SPACES_DIR / "fashion_mnist_mobilenetv2.yaml")
    assert space.fixed["model"] == "mobilenetv2_100"
    assert space.params["macs_target"] == Param("macs_target", 0.3, 0.8)
    assert space.params["explore_until"] == Param("explore_until", 0.05, 0.5)


def test_imagefolder_template_searches_a_macs_budget_with_three_objectives():
    space = SearchSpace.load(SEARCH_SPACES_DIR / "imagefolder_resnet50.yaml")
    assert "allocator" not in space.fixed and space.fixed["image_size"] == 224
    assert "sparsity" not in space.params and "sparsity" not in space.fixed
    assert space.params["macs_target"] == Param("macs_target", 0.2, 0.6)
    assert space.params["lr"] == Param("lr", 0.05, 0.4, log=True)
    assert space.params["period"] == Param("period", 50, 1000, log=True, integer=True)
    assert [o.direction for o in space.objectives] == ["maximize", "minimize", "minimize"]
    assert [o.name for o in space.objectives] == ["val_acc", "macs", "latency_ms"]
    assert space.midpoint()["lr"] == pytest.approx(math.sqrt(0.05 * 0.4))


def test_missing_file_names_the_path_and_lists_the_shipped_spaces(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml") as info:
        SearchSpace.load(tmp_path / "nope.yaml")
    assert all(name in str(info.value) for name in SHIPPED)


def test_load_reports_bad_yaml_and_empty_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("search: {sparsity: [\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line 2, column 1: not valid YAML: expected the node content"):
        SearchSpace.load(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"empty\.yaml: the file is empty"):
        SearchSpace.load(tmp_path / "empty.yaml")


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(minimal(fixed={"epoch": 3})))
    with pytest.raises(ValueError, match=r"space\.yaml: fixed: unknown setting\(s\) 'epoch' \(did you mean 'epochs'"):
        SearchSpace.load(path)


# ---------------------------------------------------------------------------------------- objectives
def test_parse_objectives_from_text_and_list():
    expected = (Objective("val_acc", "max"), Objective("macs", "min"))
    assert parse_objectives("val_acc:max,macs:min") == expected
    assert parse_objectives(" val_acc : max , macs:min ") == expected
    assert parse_objectives(["val_acc:max", "macs:min"]) == expected
    assert parse_objectives("params:min,latency_ms:min,val_acc:max")[1] == Objective("latency_ms", "min")
    assert Objective("val_acc", "max").direction == "maximize"
    assert str(Objective("macs", "min")) == "macs:min"


def test_objectives_default_to_accuracy_and_macs():
    assert [str(o) for o in SearchSpace.from_dict(minimal()).objectives] == ["val_acc:max", "macs:min"]
    space = SearchSpace.from_dict(minimal(objectives="val_acc:max,latency_ms:min"))
    assert [o.name for o in space.objectives] == ["val_acc", "latency_ms"]


@pytest.mark.parametrize(("spec", "message"), [
    ("val_map", r"objective 'val_map' needs a mode: write val_map:max or val_map:min"),
    ("val map:max", r"objective metric 'val map' is not a metric name"),
    ("test_acc:max", r"test_acc cannot be an objective: the test set is evaluated once .* never used for selection"),
    ("val_acc:up", r"objective val_acc: mode must be 'max' or 'min', got 'up'"),
    ("val_acc:min", r"val_acc:min points the wrong way; use val_acc:max"),
    ("macs", r"objective 'macs' needs a mode: write macs:min"),
    ("val_acc:max,val_acc:max", r"listed more than once: val_acc"),
    ("val_acc:max,macs:min,val_acc:max", r"listed more than once: val_acc"),
    ("", r"at least one objective"),
    ([], r"at least one objective"),
    (5, r"objectives must be a list"),
])
def test_bad_objectives_are_rejected(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_objectives(spec)


def test_user_metrics_are_objectives_with_either_direction():
    assert parse_objectives("val_loss:min,val_map:max,macs:min") == (
        Objective("val_loss", "min"), Objective("val_map", "max"), Objective("macs", "min"))
    with pytest.raises(ValueError, match=r"unknown objective metric 'accuracy'; choose from: val_acc, macs"):
        parse_objectives("accuracy:max", allowed=BUILTIN_OBJECTIVES)


def test_a_yaml_space_allows_only_what_the_built_in_trainable_reports():
    with pytest.raises(ValueError, match=r"^s\.yaml: unknown objective metric 'val_loss'; choose from: val_acc"):
        SearchSpace.from_dict(minimal(objectives=["val_loss:min"]), source="s.yaml")


def test_bad_objectives_in_a_space_name_the_source():
    with pytest.raises(ValueError, match=r"^my\.yaml: test_acc cannot be an objective"):
        SearchSpace.from_dict(minimal(objectives=["val_acc:max", "test_acc:max"]), source="my.yaml")
    with pytest.raises(ValueError, match=r"^<dict>: at least one objective"):
        SearchSpace.from_dict(minimal(objectives=[]))


def test_metric_list_is_what_trials_report():
    assert BUILTIN_OBJECTIVES == ("val_acc", "macs", "params", "latency_ms")


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(("data", "message"), [
    (minimal(objective=["val_acc:max"]), r"unknown top-level key\(s\) \['objective'\]; allowed: fixed, search"),
    (minimal(fixed={"sparsty": 0.5}), r"fixed: unknown setting\(s\) 'sparsty' \(did you mean 'sparsity'\?\)"),
    (minimal(search={}), r"search: needs at least one parameter"),
    (minimal(search=None), r"search: needs at least one parameter"),
    (with_search(sparsty={"low": 0.3, "high": 0.8}), r"search: unknown setting\(s\) 'sparsty'"),
    (with_search(momentum={"low": 0.8, "high": 0.95}), r"search: 'momentum' cannot be searched; searchable: sparsity"),
    (with_search(lr={"low": 0.01}), r"lr: a range needs both low and high"),
    (with_search(lr={}), r"lr: needs low and high \(a range\) or choices"),
    (with_search(lr={"low": 0.01, "high": 0.1, "choices": [0.01, 0.1]}), r"lr: give either low/high or choices"),
    (with_search(lr={"low": 0.3, "high": 0.1}), r"search: lr: low \(0\.3\) must be below high \(0\.1\)"),
    (with_search(lr={"low": 0.1, "high": 0.1}), r"lr: low == high \(0\.1\) searches nothing; fix it under `fixed`"),
    (with_search(lr={"low": 0.0, "high": 0.1, "log": True}), r"lr: log: true needs positive bounds, got low=0"),
    (with_search(lr={"low": "1e-3", "high": 0.1}), r"lr: low must be a number, got '1e-3' \(YAML reads 1e-3 as text"),
    (with_search(lr={"low": 0.01, "high": 0.1, "step": 0.01}), r"lr: unknown key\(s\) \['step'\]; allowed: low, high"),
    (with_search(lr={"low": 0.01, "high": 0.1, "int": True}), r"lr: int: true is only for integer settings \(period\)"),
    (with_search(lr=0.1), r"search: lr: expected a mapping like \{low: 0\.3, high: 0\.8\}"),
    (with_search(period={"low": 4, "high": 64}), r"period is an integer setting: add `int: true`"),
    (with_search(period={"low": 4.5, "high": 64, "int": True}), r"period: int: true needs integer bounds, got low=4"),
    (with_search(period={"choices": [4, 8.5, 16]}), r"period: choice 8\.5 is not an integer"),
    (with_search(scorer={"low": 0, "high": 1}), r"scorer is categorical: search it with choices"),
    (with_search(scorer={"choices": ["css"]}), r"scorer: fewer than two choices searches nothing; fix it under"),
    (with_search(scorer={"choices": ["css", "css"]}), r"scorer: choices repeat a value"),
    (with_search(scorer={"choices": "css"}), r"scorer: choices must be a list"),
    (with_search(scorer={"choices": ["css", "l1"], "log": True}), r"scorer: log and int apply to low/high ranges"),
    (with_search(scorer={"choices": ["css", "bogus"]}), r"sampled configuration would be invalid \(.*scorer='bogus'\)"
                                                        r": unknown scorer 'bogus'"),
    (minimal(fixed={"epochs": 3, "sparsity": 0.5}), r"sparsity: both searched and fixed"),
    (minimal(description=["not", "text"]), r"description must be text"),
])
def test_bad_spaces_are_rejected_by_key(data, message):
    with pytest.raises(ValueError, match=message) as info:
        SearchSpace.from_dict(data, source="space.yaml")
    assert str(info.value).startswith("space.yaml: ")


def test_regrow_above_sparsity_is_explained_in_terms_of_the_ranges():
    data = with_search(sparsity={"low": 0.2, "high": 0.8})
    with pytest.raises(ValueError, match=r"^s\.yaml: a sampled configuration could violate regrow_ratio <= sparsity: "
                                         r"regrow_ratio up to 0\.3 but sparsity down to 0\.2"):
        SearchSpace.from_dict(data, source="s.yaml")
    # a fixed or default regrow_ratio is named as such
    with pytest.raises(ValueError, match=r"regrow_ratio fixed at 0\.25 but sparsity down to 0\.2"):
        SearchSpace.from_dict(minimal(fixed={"regrow_ratio": 0.25}, search={"sparsity": {"low": 0.2, "high": 0.8}}))
    with pytest.raises(ValueError, match=r"regrow_ratio at its default 0\.1 but sparsity down to 0\.05"):
        SearchSpace.from_dict(minimal(search={"sparsity": {"low": 0.05, "high": 0.8}}))
    with pytest.raises(ValueError, match=r"regrow_ratio up to 0\.3 but sparsity fixed at 0\.25"):
        SearchSpace.from_dict(minimal(fixed={"sparsity": 0.25}, search={"regrow_ratio": {"low": 0.0, "high": 0.3}}))


def test_sparsity_from_zero_still_checks_the_values_just_above_it():
    # sparsity 0 itself is the dense run (no regrow check), but 0.01 with regrow_ratio 0.3 would fail mid-sweep
    with pytest.raises(ValueError, match=r"regrow_ratio up to 0\.3 but sparsity down to 0\.0"):
        SearchSpace.from_dict(with_search(sparsity={"low": 0.0, "high": 0.8}))
    space = SearchSpace.from_dict(minimal(search={"sparsity": {"low": 0.0, "high": 0.8}},
                                          fixed={"regrow_ratio": 0.0}))
    assert space.params["sparsity"].low == 0.0


def test_the_corner_check_catches_invalid_combinations_with_fixed_settings():
    # a searched MACs budget with a regrow ratio the channel budget could not hold is fine (no coupling)
    assert SearchSpace.from_dict(with_search(macs_target={"low": 0.2, "high": 0.6})).params["macs_target"].low == 0.2
    # ranges beyond what the setting allows fail at the offending end
    with pytest.raises(ValueError, match=r"\(.*sparsity=1\.2.*\): sparsity must be in \[0\.0, 1\.0\)"):
        SearchSpace.from_dict(with_search(sparsity={"low": 0.3, "high": 1.2}))
    with pytest.raises(ValueError, match=r"explore_until must be in \(0\.0, 1\.0\]"):
        SearchSpace.from_dict(with_search(explore_until={"low": 0.5, "high": 1.5}))
    # a fixed value that is only invalid together with the searched ones is reported too
    with pytest.raises(ValueError, match=r"could violate regrow_ratio <= sparsity: regrow_ratio fixed at 0\.2 but "
                                         r"sparsity down to 0\.1"):
        SearchSpace.from_dict(minimal(fixed={"regrow_ratio": 0.2}, search={"sparsity": {"low": 0.1, "high": 0.5}}))


def test_categorical_choices_are_checked_against_fixed_settings():
    data = minimal(fixed={"macs_target": 0.4}, search={"allocator": {"choices": ["gamma", "magic"]}})
    with pytest.raises(ValueError, match=r"allocator='magic'\): unknown allocator 'magic'"):
        SearchSpace.from_dict(data)
    space = SearchSpace.from_dict(minimal(fixed={"macs_target": 0.4},
                                          search={"allocator": {"choices": ["gamma", "uniform"]}}))
    assert [corner["allocator"] for corner in space.sample_corners()] == ["gamma", "uniform"]


def test_macs_target_may_offer_no_budget_as_a_choice():
    space = SearchSpace.from_dict(minimal(fixed={"allocator": "uniform"},
                                          search={"macs_target": {"choices": [None, 0.3, 0.5]}}))
    assert [corner["macs_target"] for corner in space.sample_corners()] == [0.3, 0.5, None]
    assert space.run_config({"macs_target": None}).chex.macs_target is None


# ----------------------------------------------------------------------------------------- corners
def test_corners_are_every_low_high_combination():
    space = SearchSpace.from_dict(minimal())
    corners = space.sample_corners()
    assert len(corners) == 8
    assert {"sparsity": 0.3, "regrow_ratio": 0.3, "period": 4} in corners
    assert {"sparsity": 0.8, "regrow_ratio": 0.0, "period": 64} in corners
    assert all(isinstance(corner["period"], int) for corner in corners)


def test_numeric_choices_contribute_their_extremes():
    space = SearchSpace.from_dict(minimal(search={"period": {"choices": [16, 4, 64, 32]}}))
    assert space.sample_corners() == [{"period": 4}, {"period": 64}]
    assert space.midpoint() == {"period": 16}


def test_integer_bounds_written_as_floats_become_integers():
    space = SearchSpace.from_dict(minimal(search={"period": {"low": 4.0, "high": 64.0, "int": True}}))
    assert space.params["period"] == Param("period", 4, 64, integer=True)
    assert type(space.params["period"].low) is int
    # and float settings get float bounds even when written as integers
    space = SearchSpace.from_dict(minimal(search={"lr": {"low": 1, "high": 2}}))
    assert type(space.params["lr"].low) is float


# ------------------------------------------------------------------------------------------- use
def test_run_config_merges_fixed_then_sampled_then_overrides():
    space = SearchSpace.from_dict(minimal(fixed={"epochs": 3, "model": "resnet34", "lr": 0.05}))
    config = space.run_config({"sparsity": 0.6, "regrow_ratio": 0.1, "period": 8})
    assert (config.train.model, config.train.epochs, config.train.lr) == ("resnet34", 3, 0.05)
    assert (config.chex.sparsity, config.chex.regrow_ratio, config.chex.period) == (0.6, 0.1, 8)
    assert config.chex.explore_until == ChexConfig().explore_until  # neither fixed nor searched: the default
    config = space.run_config({"sparsity": 0.6, "regrow_ratio": 0.1, "period": 8}, epochs=30, period=12, seed=3)
    assert (config.train.epochs, config.chex.period, config.train.seed, config.chex.seed) == (30, 12, 3, 3)
    assert config.train.model == "resnet34"
    assert space.fixed["epochs"] == 3  # overrides never leak into the space


def test_run_config_rejects_missing_and_invalid_values():
    space = SearchSpace.from_dict(minimal(), source="s.yaml")
    with pytest.raises(ValueError, match=r"s\.yaml: no sampled value for searched setting\(s\) period"):
        space.run_config({"sparsity": 0.6, "regrow_ratio": 0.1})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'epoch'"):
        space.run_config({"sparsity": 0.6, "regrow_ratio": 0.1, "period": 8}, epoch=30)
    with pytest.raises(ValueError, match=r"regrow_ratio must be <= sparsity"):
        space.run_config({"sparsity": 0.3, "regrow_ratio": 0.1, "period": 8}, regrow_ratio=0.5)


def test_optuna_distributions_match_the_params():
    space = SearchSpace.from_dict(minimal(search={
        "sparsity": {"low": 0.3, "high": 0.8}, "period": {"low": 4, "high": 64, "log": True, "int": True},
        "lr": {"low": 0.03, "high": 0.3, "log": True}, "scorer": {"choices": ["css", "l1"]}},
        fixed={"regrow_ratio": 0.1}))
    dists = space.optuna_distributions()
    assert list(dists) == ["sparsity", "period", "lr", "scorer"]
    assert dists["sparsity"] == optuna.distributions.FloatDistribution(0.3, 0.8)
    assert dists["period"] == optuna.distributions.IntDistribution(4, 64, log=True)
    assert dists["lr"] == optuna.distributions.FloatDistribution(0.03, 0.3, log=True)
    assert dists["scorer"] == optuna.distributions.CategoricalDistribution(("css", "l1"))


def test_optuna_samples_within_the_space_build_valid_configs():
    space = SearchSpace.load("fashion_mnist_resnet18")
    study = optuna.create_study(directions=[o.direction for o in space.objectives],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask(space.optuna_distributions())
        config = space.run_config(trial.params)
        assert 0.3 <= config.chex.sparsity <= 0.8 and 4 <= config.chex.period <= 64
        assert config.chex.regrow_ratio <= config.chex.sparsity


def test_to_dict_round_trips():
    for name in SHIPPED:
        space = SearchSpace.load(SEARCH_SPACES_DIR / name)
        assert SearchSpace.from_dict(space.to_dict(), source=space.source) == space


def test_direct_construction_is_validated_too():
    space = SearchSpace(fixed={}, params={"sparsity": Param("sparsity", 0.3, 0.8)})
    assert [str(o) for o in space.objectives] == ["val_acc:max", "macs:min"]
    with pytest.raises(ValueError, match=r"^<dict>: sparsity: both searched and fixed"):
        SearchSpace(fixed={"sparsity": 0.5}, params={"sparsity": Param("sparsity", 0.3, 0.8)})


def test_importing_the_space_module_pulls_in_no_tuning_stack():
    code = ("import chex_tune.tuning.space, sys; "
            "bad = {'ray', 'mlflow', 'optuna'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
