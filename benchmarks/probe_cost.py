"""The cost of a run's end (variance probes, BN recalibration, the last evaluations) against its training, at one scale.

One :class:`varshift.training.Trainer` built from the composed config (``conf/``, as ``varshift-train`` composes it;
default: the laptop scale's Fashion-MNIST and preresnet14_w8, Bernoulli 0.5 before BN, one thread) trains
``--epochs`` epochs (each with its test pass and checkpoint, as a run has them), then runs ``Trainer.finish()``: the
eval-mode accuracy on the training data, the variance probe, BN recalibration, the test pass and the probe after it.
The run's whole training is estimated as the scale's epochs times the measured seconds per epoch, and the end's share
is its seconds over those of the whole run (training and end), in percent.

    .venv/bin/python benchmarks/probe_cost.py                        # laptop scale, one epoch measured
    .venv/bin/python benchmarks/probe_cost.py scale=demo --epochs 1  # any Hydra overrides after the options
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from varshift.config import register_schema, to_plain, validate
from varshift.training import Trainer

DEFAULTS = ["scale=laptop", "model=preresnet14_w8", "trainer.threads=1", "trainer.progress=false"]


def compose_config(overrides: list[str]) -> dict:
    register_schema()
    with initialize_config_module(config_module="varshift.conf", version_base="1.3"):
        return validate(to_plain(compose("config", overrides=[*DEFAULTS, *overrides])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="epochs trained and timed (default: 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the config (key=value)")
    args = parser.parse_args(argv)
    cfg = compose_config(args.overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir))
        start = time.perf_counter()
        for _ in range(args.epochs):
            trainer.run_epoch()
        epoch_s = (time.perf_counter() - start) / args.epochs
        start = time.perf_counter()
        trainer.finish()
        end_s = time.perf_counter() - start
    epochs = cfg["trainer"]["epochs"]
    training_s = epochs * epoch_s
    result = {"scale": cfg["scale"]["name"], "model": cfg["model"]["name"], "epochs": epochs,
              "probe_batches": cfg["probe"]["batches"], "seconds_per_epoch": round(epoch_s, 2),
              "training_s": round(training_s, 1), "end_of_run_s": round(end_s, 1),
              "end_share_percent": round(100.0 * end_s / (training_s + end_s), 1)}
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
