"""varshift's own: Bernoulli, Gaussian and uniform (Uout) dropout before BN at one noise variance s2.

Uout (beta 0.5: s2 = 1/12) shifts the variance far less than Bernoulli dropout at drop 0.5 (s2 = 1), but it
also injects twelve times less noise. At one s2 (Bernoulli and Gaussian at the drop ratio q with
q / (1 - q) = beta^2 / 3) the theory (Eq. 8, 15) predicts the same shift for the three kinds, so what is left
between them is the shape of the noise, not its variance. The preset runs Uout; this recipe adds the other two.
``python experiments/variance_matched.py --scale demo``
"""

from omegaconf import OmegaConf
from recipe import main

from varshift import theory
from varshift.paths import conf_file

PRESET = conf_file("experiment", "variance_matched")


def drop_ratio_at(s2: float) -> float:
    """The drop ratio q of Bernoulli and Gaussian dropout whose noise variance q / (1 - q) is ``s2``."""
    return s2 / (1.0 + s2)


def matched_sweep(beta: float) -> list[str]:
    """Overrides of a sweep of Bernoulli and Gaussian dropout at the noise variance of Uout at ``beta``."""
    q = drop_ratio_at(theory.noise_variance("uniform", beta))
    return ["dropout=bernoulli,gaussian", f"dropout.rate={q!r}"]


if __name__ == "__main__":
    uout_beta = OmegaConf.create(PRESET.read_text()).dropout.rate
    raise SystemExit(main("variance_matched", ["fig4", "theory-vs-measured"], extra_sweeps=[matched_sweep(uout_beta)]))
