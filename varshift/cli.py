"""``varshift-train``: the Hydra app (configs in the repository's ``conf/``).

Examples::

    varshift-train                                   # demo scale: small CNN, Fashion-MNIST
    varshift-train dropout=uniform dropout.rate=0.3 dropout.position=before_conv
    varshift-train -m dropout.rate=0.1,0.3,0.5 seed=0,1,2          # a sweep, one job per setting
    varshift-train -m experiment=fig4 scale=paper hydra/launcher=slurm
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from varshift import train
from varshift.config import register_schema, to_plain, validate
from varshift.paths import CONF_DIR

register_schema()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    settings = validate(to_plain(cfg))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = train.run(settings, run_dir)
    print(f"{run_dir}: test accuracy {summary['test_acc']:.2f}%"
          + (f", after BN recalibration {summary['test_acc_recalibrated']:.2f}%"
             if "test_acc_recalibrated" in summary else "")
          + f", mean shift {summary['mean_shift']:.4f}")
    return summary["test_acc"]


if __name__ == "__main__":
    main()
