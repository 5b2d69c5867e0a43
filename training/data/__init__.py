"""Datasets: ABID download and statistics, synthetic bins (``binwatch data ...``)."""
