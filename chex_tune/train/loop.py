"""The training loop: one CHEX run from scratch, ending in a compact model and its metrics.

    result = train(RunConfig.from_dict({"model": "resnet18", "dataset": "fashion-mnist", "sparsity": 0.5}),
                   "runs/r18")

SGD with Nesterov momentum, linear warm-up then cosine LR (set every step from the step count, so
resuming needs no scheduler state), label smoothing, no weight decay on norm and bias parameters,
bf16 autocast and channels_last on CUDA, optional ``torch.compile``. The ``ChannelExplorer`` runs
after every optimizer step; once its masks are frozen the model is compacted and training goes on
with the small model (``compact_after_explore``), so the last part of training costs what it costs.

Every epoch ends with a checkpoint (atomic) and a call to ``callback(metrics)``: the hook Ray Tune
and MLflow use. ``resume=True`` continues from the last checkpoint bit-identically on CPU.

Under torch.distributed (a multi-worker trial) every rank runs this loop on its slice of each global
batch, the model in DDP (``distributed.py``: the ranks, the mask check, who writes; ``sync_bn.py``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from chex_tune.config import RunConfig
from chex_tune.core.compact import make_recipe, rebuild_compact
from chex_tune.core.explorer import ChannelExplorer
from chex_tune.core.flops import count_macs, count_params
from chex_tune.train.artifacts import write_trial
from chex_tune.train.checkpoint import FILENAME, config_differences, load_checkpoint, save_checkpoint, set_rng_states
from chex_tune.train.data import load_data
from chex_tune.train.distributed import Ranks
from chex_tune.train.evaluate import evaluate
from chex_tune.train.latency.run import run_latency
from chex_tune.train.loss import run_loss
from chex_tune.train.metrics import EPOCH, EPOCH_SECONDS, LR, MACS, SPARSITY, TRAIN_LOSS, VAL_ACC, cost_metrics
from chex_tune.train.models import model_recipe, resolve_stem
from chex_tune.train.optim import lr_at, make_optimizer
from chex_tune.train.result import RunResult
from chex_tune.train.sync_bn import plain_norms, synchronised, warn_unsynchronised
from chex_tune.train.weights import budget_of_start, file_digest, start_model
from chex_tune.units import format_count

Callback = Callable[[dict], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (the run cannot recover: stop it and say when)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


class Trainer:
    """One run's state: model, optimizer, explorer and position. ``train()`` is the usual entry point."""

    def __init__(self, config: RunConfig, out_dir: str | os.PathLike, *, callback: Callback | None = None,
                 log: Callable[[str], None] | None = None, progress: bool = False):
        self.config = config
        self.settings = config.train
        self.out = pathlib.Path(out_dir)
        self.callback = callback
        self.log = log or (lambda _message: None)
        self.progress = progress
        self.device = resolve_device(self.settings.device)
        cuda = self.device.type == "cuda"
        self.amp = self.settings.amp and cuda
        self.channels_last = self.settings.channels_last and cuda

        self.ranks = Ranks.current()
        self.sync_bn = self.settings.sync_bn and self.ranks.distributed
        self.mask_digests: list[list[int]] = []  # every rank's masks after the first prune and each prune-regrow step
        torch.manual_seed(self.settings.seed)
        self.data = load_data(self.settings, self.device)
        self.stem = resolve_stem(self.settings.stem, self.data.image_size)
        self.recipe = model_recipe(self.settings.model, num_classes=self.data.num_classes,
                                   in_chans=self.data.in_chans, stem=self.stem)
        self.example = self.data.example_input()
        self.steps_per_epoch = self.data.steps_per_epoch(self.settings.batch_size)
        self.total_steps = self.settings.epochs * self.steps_per_epoch
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0

        model, self.dense_macs, self.dense_params = start_model(self.settings, self.data, self.stem)
        self.loss = run_loss(self.settings, model, self.device, self.channels_last)
        self.latency = run_latency(config, self.example, model, self.log)
        if self.sync_bn:
            warn_unsynchronised(model)
        self._set_model(model.to(self.device))
        self.explorer = None if config.chex.dense else self._new_explorer()
        self.compacted = False
        self.widths: list[dict] = []  # per-group widths, once known (kept through compaction)
        self.frozen_sparsity = 0.0  # channel sparsity of the compacted model
        self.resumed_after: int | None = None  # the epoch a resumed run continued after

    def _new_explorer(self) -> ChannelExplorer:
        chex = self.config.chex
        total = self.settings.epochs if chex.unit == "epoch" else self.total_steps
        explorer = ChannelExplorer.from_config(
            self.model, self.example, budget_of_start(chex, self.model, self.example[:1], self.dense_macs,
                                                      f"--init {self.settings.init}"),
            total=total, optimizer=self.optimizer, latency_model=self.latency.table,
            builder=self.recipe["builder"], model_name=self.recipe["model_name"],
            model_kwargs=self.recipe["model_kwargs"])
        self.mask_digests.append(self.ranks.check_masks(explorer.state.masks, self.device,
                                                        when="after the first prune"))
        return explorer

    # ----------------------------------------------------------------------------------- plumbing
    def _set_model(self, model: nn.Module) -> None:
        """Train ``model`` from here on with a fresh optimizer (after compaction momentum starts over)."""
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.norms = plain_norms(model) if self.sync_bn else []  # what the training step synchronises
        wrapped = self.ranks.wrap(model, self.device)  # DDP when data-parallel: every rank takes rank 0's weights
        self.forward = torch.compile(wrapped) if self.settings.compile else wrapped
        self.optimizer = make_optimizer(model, lr=self.settings.lr, momentum=self.settings.momentum,
                                        weight_decay=self.settings.weight_decay)

    def _explore_step(self) -> None:
        """One explorer step (after every optimizer step or epoch, by its unit); on data-parallel ranks, the masks
        checked equal after every prune-regrow step."""
        exploring = self.explorer.schedule.is_explore_step(self.explorer.t + 1)
        self.explorer.step()
        if exploring:  # every rank's masks as CRCs (equal digests: the same channels); ranks that disagree stop
            self.mask_digests.append(self.ranks.check_masks(self.explorer.state.masks, self.device,
                                                            when=f"after prune-regrow step {self.explorer.t}"))
        if self.settings.compact_after_explore and self._architecture_frozen():
            self._compact_now()

    def _compact_now(self) -> None:
        small = self.explorer.compact()
        self.widths = self.explorer.groups_summary
        self.frozen_sparsity = self.explorer.sparsity()
        self.explorer.remove_hooks()
        self.explorer = None
        self.compacted = True
        self._set_model(small.to(self.device))

    def _architecture_frozen(self) -> bool:
        return self.explorer is not None and self.explorer.schedule.is_frozen(self.explorer.t)

    def cost(self) -> dict:
        """MACs, params and sparsity of the current (masked or compacted) model, and with a MACs budget the
        budget in MACs (``macs_budget``: what the final model will cost, known from the first epoch while
        the masked model's MACs still move with regrowth; early stopping ranks trials on it)."""
        macs_budget = self.config.chex.macs_budget(self.dense_macs)
        latency = self.latency.report(self.explorer, self.model)
        if self.explorer is not None:
            return cost_metrics(macs=self.explorer.macs(), params=self.explorer.params(),
                                sparsity=self.explorer.sparsity(), macs_budget=macs_budget, **latency)
        return cost_metrics(macs=count_macs(self.model, self.example[:1]), params=count_params(self.model),
                            sparsity=self.frozen_sparsity, macs_budget=macs_budget, **latency)

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_path(self) -> pathlib.Path:
        return self.out / FILENAME

    def save(self) -> None:
        if not self.ranks.main:  # ranks hold the same state: one writes it
            return
        save_checkpoint({
            "epoch": self.epoch, "step": self.step, "history": self.history, "train_seconds": self.train_seconds,
            "config": self.config.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "recipe": self.model.chex_recipe if self.compacted else None,
            "explorer": self.explorer.state_dict() if self.explorer is not None else None,
            "widths": self.widths, "frozen_sparsity": self.frozen_sparsity, "mask_digests": self.mask_digests,
        }, self.checkpoint_path())

    def restore(self) -> None:
        state = load_checkpoint(self.checkpoint_path())
        changed = config_differences(state["config"], self.config.to_dict())
        if changed:
            raise ValueError(f"{self.checkpoint_path()} was written with other settings ({'; '.join(changed)}); "
                             "resume with the same settings or use another --out")
        if state["recipe"] is not None:  # saved after compaction: rebuild the small structure
            if self.explorer is not None:
                self.explorer.remove_hooks()
            self.explorer = None
            self.compacted = True
            self._set_model(rebuild_compact(state["recipe"]).to(self.device).train())
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.explorer is not None:
            self.explorer.load_state_dict(state["explorer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history, self.train_seconds = list(state["history"]), float(state["train_seconds"])
        self.widths, self.frozen_sparsity = list(state["widths"]), float(state["frozen_sparsity"])
        self.mask_digests = list(state.get("mask_digests", []))
        set_rng_states(state["rng"])  # last: rebuilding the run above drew random numbers

    # -------------------------------------------------------------------------------- training
    def train_epoch(self) -> dict:
        settings = self.settings
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        batches = self.data.train_batches(settings.batch_size, epoch=self.epoch, seed=settings.seed,
                                          shard=self.ranks.shard)
        bar = _progress_bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{settings.epochs}", self.progress)
        for n, (images, labels) in enumerate(batches, 1):
            lr = lr_at(self.step, total=self.total_steps, base_lr=settings.lr,
                       warmup_fraction=settings.warmup_fraction)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with self._batchnorm(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.loss(self.forward(images), images, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            loss_sum += loss.detach()
            if self.explorer is not None and self.config.chex.unit == "step":
                if self.explorer.schedule.is_explore_step(self.explorer.t + 1):  # CSS cannot rank NaN filters
                    self._check_finite(float(loss.detach()))
                self._explore_step()
            if bar is not None and (n % 20 == 0 or n == self.steps_per_epoch):
                bar.update(n - bar.n)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if bar is not None:
            bar.close()
        losses = self.ranks.sum([float(loss_sum)], self.device)[0]  # each rank's mean over its slices
        train_loss = losses / (self.steps_per_epoch * self.ranks.world_size)
        self._check_finite(train_loss)
        if self.explorer is not None and self.config.chex.unit == "epoch":
            self._explore_step()
        epoch_seconds = time.perf_counter() - start
        self.train_seconds += epoch_seconds
        self.epoch += 1
        return {EPOCH: self.epoch, TRAIN_LOSS: train_loss, VAL_ACC: self.evaluate("val"), LR: lr,
                EPOCH_SECONDS: epoch_seconds, **self.cost()}

    def _batchnorm(self):
        """A data-parallel step with sync_bn sees BatchNorm over every rank's batch; nothing else does."""
        return synchronised(self.norms) if self.sync_bn else contextlib.nullcontext()

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"the training loss is {loss} in epoch {self.epoch + 1} "
                                     f"(lr {self.settings.lr}); lower the learning rate")

    def evaluate(self, split: str) -> float:
        # DDP's forward is collective (buffer broadcasts) and ranks see different eval batches: the module itself
        model = self.model if self.ranks.distributed else self.forward
        return evaluate(model, self.data, split, amp=self.amp, channels_last=self.channels_last, ranks=self.ranks)

    def run(self, *, resume: bool = False) -> RunResult:
        if resume and self.checkpoint_path().exists():
            self.restore()
            self.resumed_after = self.epoch
            self.log(f"resumed from {self.checkpoint_path()} after epoch {self.epoch}")
        elif self.checkpoint_path().exists():
            raise ValueError(f"{self.out} already holds a run ({FILENAME}); pass --resume to continue it "
                             "or choose another --out")
        while self.epoch < self.settings.epochs:
            metrics = self.train_epoch()
            self.history.append(metrics)
            self.save()
            self.log(_epoch_line(metrics, self.settings.epochs))
            if self.callback is not None:
                self.callback(dict(metrics))
        return self.finish()

    # ------------------------------------------------------------------------------------ finish
    def lineage(self) -> dict:
        """Where the run came from: its dataset (name, content digest, split sizes, where it was read) and, with a
        trained start, the weights file's digest."""
        dataset = {**self.data.lineage(), "source": self.settings.data_dir or f"{self.settings.dataset} default"}
        init = {"init_digest": file_digest(self.settings.init)} if self.settings.init is not None else {}
        return {"dataset": dataset, **init}

    def finish(self) -> RunResult:
        """Compact (if not done yet), evaluate once on val and test, measure, write the run's files."""
        small = self._final_model()
        result = RunResult(
            val_acc=evaluate(small, self.data, "val", amp=self.amp, ranks=self.ranks),
            test_acc=evaluate(small, self.data, "test", amp=self.amp, ranks=self.ranks),
            val_acc_masked=self.history[-1][VAL_ACC], macs=count_macs(small, self.example[:1]),
            params=count_params(small), dense_macs=self.dense_macs, dense_params=self.dense_params, latency=None,
            epochs=self.settings.epochs, train_seconds=self.train_seconds, device=str(self.device), stem=self.stem,
            image_size=self.data.image_size, train_size=self.data.train_size, val_size=self.data.val_size,
            test_size=self.data.test_size, lineage=self.lineage(), history=self.history,
            mask_digests=self.mask_digests, distributed=self.ranks.summary(small, self.example, sync_bn=self.sync_bn)
            or None, resumed_after_epoch=self.resumed_after)
        self.small = small
        if not self.ranks.main:  # the other ranks hold the same model: rank 0 alone measures and writes
            return result
        cpu_copy = copy.deepcopy(small).float().cpu().to(memory_format=torch.contiguous_format)
        result.latency = self.latency.measure(cpu_copy)
        write_trial(self.out, small, widths=self.widths, metrics=result.record(), history=self.history,
                    chex=self.config.chex.to_dict(), run_config={**self.config.to_dict(), "stem": self.stem})
        return result

    def _final_model(self) -> nn.Module:
        """The compact model in eval mode: the explorer's, the one compacted during training, or for a dense baseline
        the model itself with a recipe that removes nothing."""
        if self.explorer is not None:
            self.widths = self.explorer.groups_summary
            small = self.explorer.compact()
        else:
            small = self.model
            if not self.compacted:
                small.chex_recipe = make_recipe(small, {}, tuple(self.example.shape), **self.recipe)
        return small.to(self.device).eval()


def train(config: RunConfig, out_dir: str | os.PathLike, *, callback: Callback | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None, progress: bool = False) -> RunResult:
    """Train one run; returns its result (also written to ``out_dir/metrics.json`` with the per-epoch history)."""
    return Trainer(config, out_dir, callback=callback, log=log, progress=progress).run(resume=resume)


def _epoch_line(metrics: dict, epochs: int) -> str:
    m = metrics
    return (f"epoch {m[EPOCH]}/{epochs}: {TRAIN_LOSS} {m[TRAIN_LOSS]:.4f} {VAL_ACC} {m[VAL_ACC]:.4f} "
            f"{LR} {m[LR]:.4f} {SPARSITY} {m[SPARSITY]:.3f} MACs {format_count(m[MACS])} "
            f"({m[EPOCH_SECONDS]:.1f} s)")


def _progress_bar(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, leave=False, file=sys.stderr, dynamic_ncols=True)
