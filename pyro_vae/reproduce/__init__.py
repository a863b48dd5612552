"""Experiment configs → sweeps of runs → reports and figures (the papers' tables and figures).

Data flows one way: ``experiments`` reads a TOML config into run configs, ``sweep`` runs the
ones the store does not hold as finished, ``report`` and ``figures`` read the store.
"""
