"""The varshift-theory command: its files hold the closed-form numbers."""

import pandas as pd
import pytest

from varshift import theory
from varshift.theory_report import main


def test_writes_figures_csv_and_table(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--points", "11", "--formats", "png"]) == 0
    case_a = pd.read_csv(tmp_path / "theory_case_a.csv")
    assert set(case_a["kind"]) == {"bernoulli", "gaussian", "uniform"} and set(case_a["mean"]) == {0.0, 1.0}
    for row in case_a.sample(10, random_state=0).itertuples():
        assert row.shift_ratio == pytest.approx(theory.shift_ratio(row.kind, row.rate, row.mean, 1.0))
    case_b = pd.read_csv(tmp_path / "theory_case_b.csv")
    widest = case_b[case_b["d_cos2"] == case_b["d_cos2"].max()]
    assert (widest["shift_ratio"] > case_b.groupby("rate")["shift_ratio"].min().max()).all()
    assert (tmp_path / "theory_case_a.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "0.996678" in printed  # Uout beta 0.1: 300/301


def test_bad_option_names_value(capsys):
    with pytest.raises(SystemExit):
        main(["--rho", "2"])
    assert "--rho must be in [0, 1], got 2.0" in capsys.readouterr().err
