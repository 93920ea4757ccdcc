"""An :class:`~varshift.audit.AuditReport` as text: the console summary, a Markdown report, the feeds CSV."""

from __future__ import annotations

import pandas as pd

from varshift.audit.auditor import AuditReport
from varshift.audit.tables import DIRECT, SHIFTING, drop_kind, remedy

MEASURED_COLUMNS = ("measured_shift", "recalibrated_shift")
METHOD = (
    "predicted_shift is the paper's statistic max(r, 1/r), r = Var_test / Var_train of the BN layer's channel "
    "means, with this one site's noise on (per site); joint_predicted_shift the same with every site that feeds "
    "the BN on. Var_test is the BN input's on the sample batches. 'case a': the dropout output reaches the BN "
    "input unchanged (Eq. 7/8). 'Eq. 14': linear layers lie between (a conv, adds); the noise is pushed through "
    "them exactly, their weights and the correlation of their inputs as they are. 'first order': a nonlinearity "
    "lies between; the same to first order, an estimate. measured_shift is varshift.probes' statistic (BN moving "
    "variance against the eval-mode input variance on the given batches), recalibrated_shift the same after "
    "varshift.bn.recalibrate_bn on them."
)


def _verdict(report: AuditReport) -> str:
    findings = []
    if report.shift_found:
        findings.append("variance shift found")
    if report.eval_noise is not None:
        findings.append("dropout active in eval mode")
    return f"{' and '.join(findings) or 'no variance shift'} (exit {report.exit_code})"


def remedy_lines(shifting: pd.DataFrame) -> list[str]:
    """One line per kind of drop among the ``shifting`` feeds: the fixes that suit it, with the largest
    predicted shift under Uout's noise and the largest measured after BN recalibration (where measured)."""
    lines = []
    for kind, feeds in shifting.groupby(shifting["layer"].map(drop_kind), sort=False):
        uout, recalibrated = feeds["uout_shift"].max(), feeds["recalibrated_shift"].max()
        text = remedy(kind, None if pd.isna(uout) else uout, None if pd.isna(recalibrated) else recalibrated)
        lines.append(f"remedy for the {feeds['site'].nunique()} {kind} site(s) (the largest values among them): {text}")
    return lines


def summary_lines(report: AuditReport, target: str) -> list[str]:
    sites, feeds = report.sites, report.feeds[report.feeds["bn"] != ""]
    shifting = int((sites["verdict"] == SHIFTING).sum())
    source = "data" if report.from_data else "random-normal"
    lines = [
        f"varshift-audit {target}: input {'x'.join(map(str, report.input_shape))}, {report.num_batches} {source} "
        f"batch(es) of {report.batch_size}, {report.seconds:.1f} s",
        f"{len(sites)} dropout-like site(s): {shifting} shifting, {len(sites) - shifting} safe; "
        f"{len(feeds)} (site, BN) feed(s), {int((feeds['path'] == DIRECT).sum())} direct",
    ]
    if report.eval_noise is None:
        lines.append("eval mode: deterministic (two eval forwards of one input agree)")
    else:
        lines.append(f"eval mode: DROPOUT ACTIVE: outputs first differ at {report.eval_noise.module} "
                     f"({report.eval_noise.layer}); pass training=self.training to F.dropout")
    if shifting:
        lines += remedy_lines(feeds[feeds["verdict"] == SHIFTING])
    lines += [f"note: {note}" for note in report.notes]
    lines.append(f"result: {_verdict(report)}")
    return lines


def _shown(table: pd.DataFrame, report: AuditReport) -> pd.DataFrame:
    return table if report.measured else table.drop(columns=list(MEASURED_COLUMNS))


def _markdown_table(table: pd.DataFrame) -> str:
    # tabulate prints NaN as "nan" but leaves None to missingval
    return table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="-")


def console_text(report: AuditReport, target: str) -> str:
    """The summary and one row per dropout site."""
    lines = summary_lines(report, target)
    if len(report.sites):
        table = _shown(report.sites, report).to_string(index=False, float_format="{:.4g}".format, na_rep="-")
        lines[2:2] = ["", table, ""]
    return "\n".join(lines) + "\n"


def markdown_text(report: AuditReport, target: str) -> str:
    """The summary, the sites and every feed with its remedy, as Markdown."""
    parts = [f"# varshift audit of `{target}`", "", *[f"- {line}" for line in summary_lines(report, target)], ""]
    if len(report.sites):
        parts += ["## Dropout-like sites", "", _markdown_table(_shown(report.sites, report)), "",
                  "## Feeds: (site, BN layer) pairs", "", METHOD, "", _markdown_table(_shown(report.feeds, report)), ""]
    return "\n".join(parts)


def csv_text(report: AuditReport) -> str:
    """Every feed (and every safe site), all columns."""
    return report.feeds.to_csv(index=False)
