"""Sweeps: the grid planned, earlier runs skipped or resumed, failures isolated and summarised.

``grid`` expands a sweep's overrides; ``state`` reads what runs left on disk and decides what a
new launch does with each; ``index`` finds them without reading every record on every launch;
``estimate`` prices a run before it starts; ``planner`` turns the grid into planned runs,
``plan`` holds them and the text printed before and after; ``launch`` leases their cells and
reads their outcomes; ``lease`` keeps two launches off one cell. The Hydra side (a Sweeper and a
Ray launcher, ``hydra_plugins/ablate_sweeper``) only wires these to Hydra. No torch
here: a plan is printed before anything heavy is imported or launched.
"""
