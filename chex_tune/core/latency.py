"""What a latency budget reads (``LatencyModel``), and the one rule for putting a model in eval mode to time it.

Timing itself lives with the runtimes (``chex_tune.train.latency.runtimes``): one timer for PyTorch eager and ONNX
Runtime alike.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn


class LatencyModel(Protocol):
    """What a latency budget reads (``chex_tune.train.latency.LatencyTable`` is one): a network's predicted
    milliseconds from its per-layer widths, and the channel multiple its runtime runs fastest."""

    width_multiple: int

    def predict(self, channels: dict[str, tuple[int, int]]) -> float:
        """Milliseconds per call, given each conv/linear layer's (input channels per group, output channels); a
        layer left out is at its dense widths."""


def in_eval_mode(model: nn.Module) -> nn.Module:
    """``model.eval()``, or the model as it is where eval() is refused: a ``torch.export`` graph (an MLflow pt2
    model) is fixed in the mode it was exported in and raises NotImplementedError."""
    try:
        return model.eval()
    except NotImplementedError:
        return model
