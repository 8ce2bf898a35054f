from .common.does_not_exist import thing  # noqa: F401
