"""Hydra plugins of ablate: a sweeper and a Ray launcher. Both import only Hydra at first
(``ablate.sweep`` when a sweep runs): a single run pays nothing for them.
"""

PLUGINS = ("hydra_plugins.ablate_sweeper.sweeper.AblateSweeper",
           "hydra_plugins.ablate_sweeper.ray_launcher.AblateRayLauncher")


def register_plugins() -> None:
    """Make the sweeper and the Ray launcher (and their configs) known to Hydra where its plugin
    scan, a listing of ``hydra_plugins`` on disk, cannot see them: a (default, strict) editable
    install maps the package through an import hook. Elsewhere this does nothing."""
    from hydra.core.plugins import Plugins
    from hydra.utils import get_class

    plugins = Plugins.instance()  # Hydra's scan (once per process; Hydra runs it anyway)
    for name in PLUGINS:
        if name not in plugins.class_name_to_class:  # imported only then
            plugins.register(get_class(name))
