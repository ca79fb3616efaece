"""GPU protocol rows of bench_train (30 epochs, all images), one JSON per row as soon as it ends, epochs logged.

    OUT=DIR python scripts/gpu_rows.py cuda dense CHEX@0.03 CHEX@0.25

Environment: OUT, the folder for ``row_<name>_<level>.json``; EP and SUB shorten the protocol for a dry run on
the CPU (epochs, training images); DATA_DIR, the four Fashion-MNIST files carried along (default .gpu/data).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_train as bt  # noqa: E402

from chex_tune.train import loop  # noqa: E402


def log_epochs() -> None:
    """Every Trainer logs its epochs to stdout (bench_train's runs are quiet)."""
    init = loop.Trainer.__init__

    def logged_init(self, *args, **kwargs):
        kwargs.setdefault("log", lambda message: print(message, flush=True))
        init(self, *args, **kwargs)

    loop.Trainer.__init__ = logged_init


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device", help="torch device of the runs (cuda, or cpu for a dry run)")
    parser.add_argument("rows", nargs="+", metavar="ROW[@LEVEL]", help="a bench_train row, at a MACs level")
    args = parser.parse_args(argv)
    log_epochs()
    out = Path(os.environ["OUT"])
    base = dict(bt.MODES["full"]) | {"epochs": int(os.environ.get("EP", 30)),
                                     "train_subset": int(os.environ["SUB"]) if os.environ.get("SUB") else None,
                                     "data_dir": os.environ.get("DATA_DIR", ".gpu/data")}
    for spec in args.rows:
        name, _, level = spec.partition("@")
        level = float(level) if level else None
        start = time.perf_counter()
        print(f"== {name} @ {level}", flush=True)
        result = bt.run_row(name, level, base, {}, 0, args.device, Path(tempfile.mkdtemp()), None)
        result["row"], result["level"], result["seed"] = name, level, 0
        (out / f"row_{name}_{level}.json").write_text(json.dumps(result, default=str, indent=1))
        print(f"== {name} @ {level}: test {result['test_acc']:.4f} val {result['val_acc']:.4f} "
              f"macs {result['macs']} wall {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
