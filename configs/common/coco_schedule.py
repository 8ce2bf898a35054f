"""The DETR recipes' step schedule, milestones in epochs; each config calls it with its own length and decay."""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from core.lazy import LazyCall as L
from engine.solver import WarmupParamScheduler


def multistep_schedule(epochs, decay_epochs, warmup_iters=0, gamma=0.1):
    """Step schedule whose milestones are given in epochs.

    The schedule is a function of training progress (iter / max_iter), so milestones
    written in epochs land on epoch boundaries when train.epochs is set, and at the
    same fraction of training when train.max_iter is given instead.
    """
    milestones = list(decay_epochs) if isinstance(decay_epochs, (list, tuple)) else [decay_epochs]
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[gamma**i for i in range(len(milestones) + 1)],
            milestones=milestones,
            num_updates=epochs,
        ),
        warmup_iters=warmup_iters,
        warmup_factor=0.001,
    )
