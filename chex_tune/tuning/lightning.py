"""CHEX for a PyTorch Lightning model: one callback in ``Trainer(callbacks=[...])``.

    chex = ChexLightningCallback(example_batch, config, builder="my_models:MyNet", builder_kwargs={...},
                                 attribute="net")
    trainer = L.Trainer(max_epochs=10, callbacks=[chex])
    trainer.fit(module, train_loader, val_loader)
    chex.result.model            # the compact model (also compact.pt in chex.result.path)

``on_fit_start`` builds a ``ChexReporter`` around the module (or its sub-module ``attribute``, the usual
place of the network) and the first optimizer; ``on_train_batch_end`` steps the explorer after each
optimizer step; ``on_train_epoch_end`` reports the trainer's logged metrics (``val_acc``...) with the
costs, to Ray Tune inside a Ray trial and to the Optuna trial given as ``trial=``; ``on_fit_end``
compacts and makes the files the trial's result. Needs the [lightning] extra (``lightning``; the older
``pytorch_lightning`` package works too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

try:
    import lightning.pytorch as pl
except ImportError:  # the older distribution name
    try:
        import pytorch_lightning as pl
    except ImportError as exc:
        raise ImportError("ChexLightningCallback needs PyTorch Lightning: pip install 'chex-tune[lightning]'") from exc

from chex_tune.tuning.reporter import ChexReporter, ChexResult


class ChexLightningCallback(pl.Callback):
    """Prune-and-regrow during ``trainer.fit``; see the module docstring. Arguments as ``ChexReporter``'s,
    except ``total`` (taken from the trainer) and ``attribute`` (the sub-module to prune; None: the module)."""

    def __init__(self, example_inputs, config=None, *, builder=None, builder_kwargs: Mapping | None = None,
                 attribute: str | None = None, trial=None, monitor: str | None = None, out_dir=None,
                 ignore: Sequence[str] = ()):
        super().__init__()
        self.example_inputs = example_inputs
        self.config = config
        self.options = dict(builder=builder, builder_kwargs=builder_kwargs, trial=trial, monitor=monitor,
                            out_dir=out_dir, ignore=ignore)
        self.attribute = attribute
        self.reporter: ChexReporter | None = None
        self.result: ChexResult | None = None
        self._global_step = 0

    def _model(self, pl_module):
        if self.attribute is None:
            return pl_module
        if not hasattr(pl_module, self.attribute):
            raise ValueError(f"ChexLightningCallback(attribute={self.attribute!r}): {type(pl_module).__name__} has "
                             "no such sub-module")
        return getattr(pl_module, self.attribute)

    def on_fit_start(self, trainer, pl_module) -> None:
        from chex_tune.tuning.settings import resolve_chex_settings

        if not trainer.optimizers:
            raise ValueError("ChexLightningCallback needs the module's optimizer (configure_optimizers)")
        settings = resolve_chex_settings(self.config if self.config is not None else {})
        total = trainer.max_epochs if settings.unit == "epoch" else int(trainer.estimated_stepping_batches)
        if not total or total < 1:
            raise ValueError("ChexLightningCallback needs a finite training length: set max_epochs or max_steps")
        inputs = self.example_inputs
        inputs = tuple(t.to(pl_module.device) for t in inputs) if isinstance(inputs, (tuple, list)) else \
            inputs.to(pl_module.device)
        self.reporter = ChexReporter(self._model(pl_module), inputs, self.config, total=int(total),
                                     optimizer=trainer.optimizers[0], **self.options)
        self._global_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.reporter is None or self.reporter.settings.unit == "epoch":
            return
        while self._global_step < trainer.global_step:  # one explorer step per optimizer step (gradient accumulation)
            self._global_step += 1
            self.reporter.step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.reporter is None:
            return
        if self.reporter.settings.unit == "epoch":
            self.reporter.step()
        self.reporter.report(dict(trainer.callback_metrics), epoch=trainer.current_epoch + 1)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.reporter is not None and self.result is None:
            self.result = self.reporter.finish(dict(trainer.callback_metrics))

