"""The report: one self-contained HTML page (and PNG figures) from an Atlas directory."""

from .write import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
