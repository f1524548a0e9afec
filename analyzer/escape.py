"""The analyzer's outputs escape model text with shared.escape (one module for every process: the
logs and terminal tables of telemetry and the collector use it too)."""
from shared.escape import html_attr, html_text, html_url, md_inline, mpl_text, safe_filename, terminal_text

__all__ = ["html_attr", "html_text", "html_url", "md_inline", "mpl_text", "safe_filename", "terminal_text"]
