"""Offline analysis: the LIBERO-GOAL evaluation (`spec-vla-eval`), the offline draft harness
(`spec-vla-harness`), bag analysis (`spec-vla-analyze`), and the report and plot helpers they share."""
