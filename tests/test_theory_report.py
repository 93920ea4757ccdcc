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


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_figures_speak_the_papers_symbols_and_carry_their_caption_beside_them_not_inside(tmp_path):
    from varshift.theory_report import KIND_LABELS

    assert main(["--out", str(tmp_path / "plain"), "--points", "5", "--formats", "png"]) == 0
    assert main(["--out", str(tmp_path / "titled"), "--points", "5", "--formats", "png", "--title"]) == 0
    case_a = (tmp_path / "plain" / "theory_case_a.txt").read_text()
    assert case_a.startswith("Case (a), a dropout directly before BN (Eq. 8)") and "s² = q/(1−q)" in case_a
    assert "d·cos²θ" in (tmp_path / "plain" / "theory_case_b.txt").read_text()
    assert set(KIND_LABELS.values()) == {"Bernoulli, drop ratio q", "Gaussian, s² = q/(1−q)", "Uout, width β"}
    for stem in ("theory_case_a", "theory_case_b"):  # the drawn caption makes the image taller, not wider
        (width, plain), (titled_width, titled) = (png_size(tmp_path / folder / f"{stem}.png")
                                                  for folder in ("plain", "titled"))
        assert titled > plain + 40 and abs(titled_width - width) <= 2
