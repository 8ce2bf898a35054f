# load_rel of values that are not configs, and of a dict, from another config file.
from core.lazy import LazyConfig

name, settings = LazyConfig.load_rel("plain.py", ("name", "settings"))
derived = {"name": name + "_derived", "depth": settings.depth + 1}
