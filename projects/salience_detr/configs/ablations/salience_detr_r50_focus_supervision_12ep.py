"""Salience DETR's Table 7 baseline: the R50 12-epoch model with its scale-independent salience supervision replaced
by Focus DETR's discrete, scale-assigned foreground supervision (each object marks the tokens of the one level whose
size range holds it; ``overlap`` widens adjacent ranges into each other, e.g. ``...loss.overlap=0.5``).

Everything else (model, recipe) is ``salience_detr_r50_4scale_12ep.py``; the README's ablation table lists the other
rows of the paper's tables as overrides of that config.
"""

from core.lazy import LazyCall as L
from projects.salience_detr.modeling import FocusForegroundLoss

from ..salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.extra_losses.salience.loss = L(FocusForegroundLoss)(overlap=0.0)

train.output_dir = "./output/salience_detr_r50_focus_supervision_12ep"
