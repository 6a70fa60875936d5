"""Results that users look at: labelled PNG figures and self-contained HTML reports.

- :mod:`fmc_ij.report.figures`: orthogonal views, distributions, curves (matplotlib, headless);
- :mod:`fmc_ij.report.html`: one-file HTML pages with the PNGs embedded;
- :mod:`fmc_ij.run_report` (one level up: it predicts) builds the report of a training run or a demo folder.
"""

from fmc_ij.report.figures import (
    display_range,
    line_plot,
    orthoviews,
    plt,
    save_figure,
    scatter_plot,
    slice_panel,
    strip_plot,
)
from fmc_ij.report.html import Raw, find_chromium, html_report, png_data_uri, screenshot, table_html

__all__ = [
    "Raw",
    "display_range",
    "find_chromium",
    "html_report",
    "line_plot",
    "orthoviews",
    "plt",
    "png_data_uri",
    "save_figure",
    "scatter_plot",
    "screenshot",
    "slice_panel",
    "strip_plot",
    "table_html",
]
