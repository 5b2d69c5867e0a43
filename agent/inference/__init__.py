"""Counts and verdicts: preprocessing, inference backends, the model store, the decision rule and the
inference pipeline (the ``inference`` thread)."""
