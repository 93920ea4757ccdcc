"""varshift's analysis: finished runs -> one tidy DataFrame -> the paper's figures and tables.

    from analysis import collect, table
    runs = collect(["multirun/table4/paper"])            # one row per complete run
    print(table(runs, ["dataset.name", "model.name"], ["dropout.rate"], "test_error").markdown)

Figures are in :mod:`analysis.figures` and :mod:`analysis.theory_figure`, the paper tables in
:mod:`analysis.tables`, the paper's numbers in :mod:`analysis.paper`, one run's report in
:mod:`analysis.report`; ``python -m analysis --help`` makes any of them from the command line.
"""

from analysis.collect import collect, collect_records, collect_wandb
from analysis.paper import paper_numbers, paper_reference
from analysis.tables import Table, table, write_table

__all__ = ["Table", "collect", "collect_records", "collect_wandb", "paper_numbers", "paper_reference",
           "table", "write_table"]
