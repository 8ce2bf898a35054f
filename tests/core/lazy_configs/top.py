# A top-level config composed from the pieces in common/ (no __init__.py anywhere).
from .common import optim  # directory seen as a package: loads common/optim.py
from .common.model import model  # noqa: F401 (collected by LazyConfig.load)
from .common.train import train

optimizer = optim.optimizer

train.max_iter = 200
train.output_dir = "./output/top"

_private = dict(skipped=True)
helper_list = [1, 2]  # plain lists are not collected
