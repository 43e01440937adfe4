"""Hydra plugins of ablate: the sweeper that plans, resumes and summarises a grid, and a Ray
launcher that gives each job its own GPU (or a share of one) in a fresh process."""


def register_plugins() -> None:
    """Make the sweeper and the Ray launcher (and their configs) known to Hydra, once.

    Hydra finds plugins by listing the ``hydra_plugins`` namespace package on disk, which does
    not see them in a (default, strict) editable install; registering them explicitly works
    for every kind of install. ``ablate.run.main`` calls this before Hydra starts. Importing the
    modules also stores their configs (``hydra/sweeper=ablate``, ``hydra/launcher=ablate_ray``).
    """
    from hydra.core.plugins import Plugins

    # Hydra's first scan re-runs every plugin module it finds (its own BasicSweeper among
    # them): only import the plugins after it, or they subclass a stale BasicSweeper.
    plugins = Plugins.instance()
    from hydra_plugins.ablate_sweeper.ray_launcher import AblateRayLauncher
    from hydra_plugins.ablate_sweeper.sweeper import AblateSweeper

    for plugin in (AblateSweeper, AblateRayLauncher):
        if f"{plugin.__module__}.{plugin.__name__}" not in plugins.class_name_to_class:
            plugins.register(plugin)
