# A name that is neither a config file nor a folder next to this file.
from . import no_such_config  # noqa: F401
