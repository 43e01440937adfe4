"""Reports computed from runs: ``python -m ablate.report [PATH ...]`` -> ``reports/tables.md``.

``load`` turns records, offline W&B runs and a W&B project into one DataFrame; ``stats``
chooses each model's learning rate; ``tables`` renders markdown and ``figures`` the plots. Pure
functions of the runs: the same inputs give the same bytes. No torch import on this side.
"""
