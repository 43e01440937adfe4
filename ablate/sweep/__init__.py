"""Sweeps: the grid planned, earlier runs skipped or resumed, failures isolated and summarised.
Each module's docstring says its part; ``hydra_plugins/ablate_sweeper`` only wires them to
Hydra. No torch here: a plan is printed before anything heavy is imported or launched.
"""
