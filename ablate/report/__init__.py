"""Reports computed from runs: ``python -m ablate.report [PATH ...]`` -> ``reports/tables.md``.

``load`` turns records (read into rows by ``ablate.rows``), offline W&B runs and a W&B project
into one DataFrame; ``stats`` chooses each model's learning rate by the rule of
``ablate.stages``; ``tables`` and ``evidence_tables`` render markdown (``formatting``), and
``figures`` the plots. Pure functions of the runs: the same inputs give the same bytes. No
torch import on this side.
"""
