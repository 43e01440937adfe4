"""Reports computed from runs: ``python -m ablate.report [PATH ...]`` -> ``reports/tables.md``.

``load`` turns records (rows by ``ablate.rows``) and W&B runs into one DataFrame; ``stats``
chooses each model's lr by ``ablate.stages``' rule; ``tables`` and ``evidence_tables`` render
markdown, ``figures`` the plots: the same inputs give the same bytes. No torch on this side.
"""
