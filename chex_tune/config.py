"""Settings as frozen dataclasses, validated at the edge.

``ChexConfig`` holds the CHEX settings, ``TrainConfig`` one training run's, and ``RunConfig`` both
under one flat namespace (``{"model": "resnet18", "epochs": 30, "sparsity": 0.5, ...}``): the same
field names serve the Python API, YAML files, the CLI, Ray configs and MLflow params, so a value is
spelled one way everywhere. The schedule's length (``total``) is not a setting: the training loop
derives it from epochs and steps per epoch.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from chex_tune.core.checks import _in_range, _is_int, _one_of
from chex_tune.core.config import ChexConfig  # re-exported

DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic")
# A fine-tune from trained weights (``init``): the defaults of what a run's settings leave out, chosen on the CPU
# protocol of benchmarks/train.md (benchmarks/front.md): a short schedule at a fifth of the from-scratch rate, and
# the first mask (uniform widths by group magnitude) kept and compacted at once. In a 4-epoch fine-tune, exploring
# (prune-regrow under any allocator tried) lost 0.3-3 pt to pruning once; pruning once by filter L1 lost 0.2-0.9
# pt to group magnitude. A search over a trained start can still explore (regrow_ratio, explore_until, allocator).
FINETUNE = {"epochs": 4, "lr": 0.02, "norm_init": None, "explore_until": 0.01, "regrow_ratio": 0.0,
            "allocator": "uniform", "initial_scorer": "magnitude"}
# Named sets of defaults for what a run's settings leave out, applied where they are asked for by name: the CLI's
# train, sweep and family apply "finetune" to a run with a trained start (--init); in Python,
# ``RunConfig.from_dict(values, preset="finetune")``, and ``preset_chex("finetune")`` for ChexReporter/ChexSpace.
PRESETS = {"finetune": FINETUNE}
STEMS = ("auto", "small", "timm")
LATENCY_RUNTIMES = ("onnxruntime", "torch")  # what a latency table can be timed in


@dataclass(frozen=True)
class TrainConfig:
    model: str = "resnet18"  # any timm model name
    dataset: str = "fashion-mnist"
    data_dir: str | None = None  # default: where the dataset's package installs it
    image_size: int | None = None  # input size in pixels; None = the dataset's own (imagefolder: 224)
    stem: str = "auto"  # "small": stride-1 3x3 stem without max-pool; "auto": small for <= 64 px input
    # Input channels the model takes; None = the dataset's own. A grey dataset is fed to a 3-channel model by repeating
    # its channel, a colour one to a 1-channel model by averaging its (normalised) channels. An init sets it.
    in_chans: int | None = None
    pretrained: bool = False  # only weights already in the local timm cache
    # A trained start: the dense model's weights (a file, or an MLflow model URI that a sweep resolves to one).
    # The CLI makes such a run a fine-tune (the "finetune" preset: FINETUNE's defaults for what the settings leave
    # out); norm_init is never applied to it (it would erase the trained scales), and the first mask is chosen on
    # the trained filters.
    init: str | None = None
    # Initial scale (gamma) of every BatchNorm; None = the model's own (1.0). 0.5 is the CHEX paper's
    # init and measured best for every row of benchmarks/train.md (CHEX gained most: +0.6 pt at 25% MACs).
    norm_init: float | None = 0.5
    epochs: int = 30
    batch_size: int = 128
    train_subset: int | None = None  # train on N images (class-balanced, fixed draw) for quick runs
    val_size: int | None = None  # carved from the training set; None = 10% of it, in [500, 5000]
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to norm and bias parameters
    warmup_fraction: float = 0.05  # linear warm-up over this fraction of the steps, then cosine
    label_smoothing: float = 0.1
    # Distillation from the trained start (init): loss = (1 - distill) * cross-entropy + distill * T^2 * KL(teacher
    # || student) at temperature T; the teacher is the dense model as loaded, frozen, in eval mode.
    distill: float = 0.0
    distill_temperature: float = 4.0
    device: str = "auto"  # "auto" = cuda when available
    amp: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # (CUDA only)
    compile: bool = False  # torch.compile the model
    compact_after_explore: bool = True  # train the compacted model once the masks are frozen
    num_workers: int = 2  # DataLoader workers for on-disk datasets (imagefolder)
    latency_batch_size: int = 1
    # Where latency_ms is predicted from: a latency table of this runtime ("onnxruntime": its CPU provider, or
    # "torch": PyTorch eager), built once per node and read by every run (the finished model is also timed end to
    # end in it: latency_measured_ms). None: the finished model timed in PyTorch eager, no table (and with a
    # latency_target, "onnxruntime")
    latency_runtime: str | None = None
    latency_threads: int | None = None  # the table's intra-op threads; None = the threads torch trains with
    # Data-parallel workers a sweep trial trains on (Ray Train's TorchTrainer inside the trial; DDP, gloo on CPU,
    # NCCL on GPU): batch_size is the global batch, split evenly across them.
    workers_per_trial: int = 1
    sync_bn: bool = False  # BatchNorm statistics over the global batch rather than each worker's slice of it
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("dataset", self.dataset, DATASETS)
        _one_of("stem", self.stem, STEMS)
        _one_of("device", self.device, ("auto", "cpu", "cuda"))
        for name in ("epochs", "batch_size", "latency_batch_size", "workers_per_trial"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.latency_runtime is not None:
            _one_of("latency_runtime", self.latency_runtime, LATENCY_RUNTIMES)
        for name in ("train_subset", "val_size", "image_size", "latency_threads", "in_chans"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        _in_range("lr", self.lr, 0.0, float("inf"), closed_high=False, open_low=True)
        _in_range("momentum", self.momentum, 0.0, 1.0, closed_high=False)
        _in_range("weight_decay", self.weight_decay, 0.0, float("inf"), closed_high=False)
        _in_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0, closed_high=False)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, closed_high=False)
        if self.norm_init is not None:
            _in_range("norm_init", self.norm_init, 0.0, float("inf"), closed_high=False, open_low=True)
        _in_range("distill", self.distill, 0.0, 1.0, closed_high=True)
        _in_range("distill_temperature", self.distill_temperature, 0.0, float("inf"), closed_high=False, open_low=True)
        if self.batch_size % self.workers_per_trial:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly across workers_per_trial "
                             f"{self.workers_per_trial}: give a batch size that is a multiple of it")
        if not isinstance(self.sync_bn, bool):
            raise ValueError(f"sync_bn must be true or false, got {self.sync_bn!r}")
        if self.init is not None and (not isinstance(self.init, str) or not self.init.strip()):
            raise ValueError(f"init must be the path of a weights file or an MLflow model URI, got {self.init!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_teacher(self) -> None:
        """Distillation's teacher is the trained start: checked where a run is assembled with its start known (the
        train command, a sweep's plan, the loop), not when settings are read, which may come before the start does
        (a space checked before its sweep's --init, a family before its dense member is trained)."""
        if self.distill > 0 and self.init is None:
            raise ValueError(f"distill {self.distill} needs init: the teacher is the trained model it starts from "
                             "(give --init WEIGHTS, or init: under a space's fixed)")


def start_preset(values) -> str | None:
    """The preset the CLI gives a run's settings: "finetune" when they name a trained start (init), else none."""
    return "finetune" if values.get("init") is not None else None


def preset_chex(name: str) -> dict:
    """A preset's CHEX settings (for ``ChexReporter``, ``ChexSpace`` or ``ChexConfig.from_dict`` in a user's loop)."""
    _one_of("preset", name, tuple(PRESETS))
    chex_keys = {f.name for f in dataclasses.fields(ChexConfig)}
    return {k: v for k, v in PRESETS[name].items() if k in chex_keys}


@dataclass(frozen=True)
class RunConfig:
    """One training run: ``train`` and ``chex`` settings behind one flat namespace (``seed`` is shared)."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    chex: ChexConfig = dataclasses.field(default_factory=ChexConfig)

    @classmethod
    def from_dict(cls, values: dict, *, preset: str | None = None) -> RunConfig:
        """The run ``values`` describe; ``preset`` names defaults (``PRESETS``) for what they leave out."""
        train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
        chex_keys = {f.name for f in dataclasses.fields(ChexConfig)}
        unknown = sorted(set(values) - train_keys - chex_keys)
        if unknown:
            hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
                key, train_keys | chex_keys, n=1)) else repr(key) for key in unknown]
            raise ValueError(f"unknown setting(s) {', '.join(hints)}; allowed: {sorted(train_keys | chex_keys)}")
        if preset is not None:
            _one_of("preset", preset, tuple(PRESETS))
            values = {**PRESETS[preset], **values}
        return cls(train=TrainConfig(**{k: v for k, v in values.items() if k in train_keys}),
                   chex=ChexConfig(**{k: v for k, v in values.items() if k in chex_keys}))

    def to_dict(self) -> dict:
        return {**self.train.to_dict(), **self.chex.to_dict()}

    def replace(self, **changes) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})
