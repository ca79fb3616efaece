"""Latency you can deploy on: per-target latency tables of a network's layers, built once per node, read by every
run (``table_for``), predicting a sub-model's latency from its widths.

    target = LatencyTarget(runtime="onnxruntime", input_shape=(3, 224, 224), batch_size=1, threads=4)
    table = table_for(model, target)          # built and saved the first time, read afterwards
    table.predict(explorer.cost.layer_channels(masks))   # milliseconds
"""

from chex_tune.train.latency.table import LatencyTable, LatencyTableError, table_for, table_path
from chex_tune.train.latency.target import LatencyTarget

__all__ = ["LatencyTable", "LatencyTableError", "LatencyTarget", "table_for", "table_path"]
