from .common import nope  # noqa: F401
