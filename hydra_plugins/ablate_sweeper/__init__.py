"""Hydra plugins of ablate: the sweeper that plans, resumes and summarises a grid, and a Ray
launcher that gives each job its own GPU (or a share of one) in a fresh process."""
