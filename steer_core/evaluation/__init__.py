"""Experiments: which method moves the Bloom level, by how much, at what cost in fluency.

grid     methods x levels x layer sets x settings over scenarios, one batch per scenario
results  results.csv, appended batch by batch (an interrupted run resumes)
judging  the judge's verdict on each row, similarity to the unsteered text
stats    summary.csv with 95% bootstrap intervals over scenarios
report   report.html (the charts)
tables   the Markdown tables of the `summarize` command
run      the `eval` command: all of the above
"""

from .grid import Grid, run_grid
from .judging import add_judgements, unsteered_similarity
from .results import RESULT_FIELDS, read_csv, read_results, row_key, write_csv
from .run import run_eval
from .stats import BOOTSTRAP_DRAWS, SUMMARY_FIELDS, bootstrap_over_scenarios, summarize

__all__ = [
    "BOOTSTRAP_DRAWS",
    "Grid",
    "RESULT_FIELDS",
    "SUMMARY_FIELDS",
    "add_judgements",
    "bootstrap_over_scenarios",
    "read_csv",
    "read_results",
    "row_key",
    "run_eval",
    "run_grid",
    "summarize",
    "unsteered_similarity",
    "write_csv",
]
