"""The jobs of a ``varshift-train -m`` sweep, checked before any of them is launched.

A sweep whose settings are wrong, or whose data is missing, would fail the same way in each of its jobs.
:func:`check_sweep` expands the sweep as Hydra's basic sweeper does (the preset's ``hydra.sweeper.params``,
then the command line's overrides), composes and validates every job's config, and loads each dataset once.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from varshift.config import register_schema, to_plain, validate
from varshift.paths import CONF_PACKAGE


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of each job of the sweep ``varshift-train -m <overrides>``, in launch order, without
    the ``hydra`` ones (the launcher's settings, the sweep's folder: nothing a job's config holds)."""
    parser = OverridesParser.create()
    task = [o for o in parser.parse_overrides(list(overrides)) if not o.is_hydra_override()]
    fixed = [o.input_line for o in task if not o.is_sweep_override()]
    params = compose("config", overrides=fixed, return_hydra_config=True).hydra.sweeper.params or {}
    swept = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    return BasicSweeper.split_arguments([*swept, *task], max_batch_size=None)[0]


def validated_jobs(overrides: Sequence[str]) -> list[dict]:
    """The validated config of every job of the sweep, in launch order.

    Raises the first job's ValueError, naming that job's own overrides.
    """
    register_schema()
    configs = []
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        jobs = sweep_jobs(overrides)
        for job in jobs:
            try:
                configs.append(validate(to_plain(compose("config", overrides=job))))
            except ValueError as err:
                own = [override for override in job if not all(override in other for other in jobs)]
                raise ValueError(f"the job {' '.join(own)} of the sweep: {err}") from err
    return configs


def check_sweep(overrides: Sequence[str]) -> int:
    """Validate every job of the sweep and load each of its datasets; return the number of jobs.

    Raises the first job's ValueError (naming that job's own overrides) or the data's error.
    """
    from varshift.data import load_dataset

    configs = validated_jobs(overrides)
    datasets = {(data["name"], data["root"], data["download"], data["verify"])
                for data in (config["dataset"] for config in configs)}
    for name, root, download, verify in sorted(datasets):
        load_dataset(name, root, download=download, verify=verify)
    return len(configs)
