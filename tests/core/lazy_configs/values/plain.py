# Top-level values of every kind, for LazyConfig.load(path, keys).
name = "plain"
ratio = 0.25
sizes = [1, 2]
settings = {"depth": 3}
