# A nested experiment: parent-directory import and a sibling-file import.
from ..top import model, optimizer, train
from . import schedule

lr_multiplier = schedule.lr_multiplier

model.num_classes = 5
train.max_iter = 10
optimizer.lr = 0.02
