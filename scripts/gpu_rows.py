"""GPU protocol rows of bench_train (30 epochs, all images), one JSON per row as soon as it ends, epochs logged."""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, "scripts")
import bench_train as bt  # noqa: E402

from chex_tune.train import loop  # noqa: E402

_init = loop.Trainer.__init__


def _logged_init(self, *args, **kwargs):
    kwargs.setdefault("log", lambda message: print(message, flush=True))
    _init(self, *args, **kwargs)


loop.Trainer.__init__ = _logged_init
out = Path(os.environ["OUT"])
# EP and SUB shorten the protocol for a dry run on the CPU; DATA_DIR: the four Fashion-MNIST files carried along
base = dict(bt.MODES["full"]) | {"epochs": int(os.environ.get("EP", 30)),
                                 "train_subset": int(os.environ["SUB"]) if os.environ.get("SUB") else None,
                                 "data_dir": os.environ.get("DATA_DIR", ".gpu/data")}
device = sys.argv[1]
for spec in sys.argv[2:]:
    name, _, level = spec.partition("@")
    level = float(level) if level else None
    start = time.perf_counter()
    print(f"== {name} @ {level}", flush=True)
    result = bt.run_row(name, level, base, {}, 0, device, Path(tempfile.mkdtemp()), None)
    result["row"], result["level"], result["seed"] = name, level, 0
    (out / f"row_{name}_{level}.json").write_text(json.dumps(result, default=str, indent=1))
    print(f"== {name} @ {level}: test {result['test_acc']:.4f} val {result['val_acc']:.4f} macs {result['macs']} "
          f"wall {time.perf_counter() - start:.1f} s", flush=True)
