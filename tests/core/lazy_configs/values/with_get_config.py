# detrex's get_config next to a relative import.
from core.lazy import get_config

from .plain import settings

train = get_config("common/train.py").train
train.max_iter = settings.depth * 100
