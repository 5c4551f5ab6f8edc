"""KL warm-up: β rises linearly per minibatch from 0 to its final value over ``warmup`` epochs
(MVAE's annealing, Wu & Goodman 2018, App. A; official code anneals per minibatch)."""


def kl_weight(step: int, steps_per_epoch: int, warmup_epochs: float | None, beta: float) -> float:
    if not warmup_epochs or warmup_epochs <= 0:
        return beta
    return beta * min(1.0, step / (warmup_epochs * steps_per_epoch))


def training_stage(model, epoch: int) -> int:
    """The stage of a model trained in stages during epoch ``epoch`` (0-based: the epochs completed).

    A model with stages says at which epochs its later stages start (``model.stage_epochs``, e.g. JNF's
    ``(joint_epochs,)``: the joint VAE first, then the unimodal flows, Senellart et al. 2025); the stage
    is how many of those epochs have been reached, 0 for one-stage models. It is a function of the epoch
    alone, so a resumed run is in the same stage as one never interrupted."""
    return sum(epoch >= int(start) for start in getattr(model, "stage_epochs", ()) or ())
