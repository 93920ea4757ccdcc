"""varshift's analysis: finished runs -> one tidy DataFrame -> the paper's figures and tables.

    from varshift.analysis import collect, table
    runs = collect(["multirun/table4/paper"])            # one row per complete run
    print(table(runs, ["dataset.name", "model.name"], ["dropout.rate"], "test_error").markdown)

Figures are in :mod:`varshift.analysis.figures` and :mod:`varshift.analysis.theory_figure`, the paper tables in
:mod:`varshift.analysis.tables`, the paper's numbers in :mod:`varshift.analysis.paper`, one run's report in
:mod:`varshift.analysis.report`; ``varshift-analysis --help`` makes any of them from the command line.
"""

from varshift.analysis.collect import collect, collect_records, collect_wandb
from varshift.analysis.paper import paper_numbers, paper_reference
from varshift.analysis.tables import Table, table, write_table

__all__ = ["Table", "collect", "collect_records", "collect_wandb", "paper_numbers", "paper_reference",
           "table", "write_table"]
