"""ablate: CNN architecture ablation studies, configured with Hydra and run with Lightning."""

__version__ = "0.1.0"
