"""KL warm-up: β rises linearly per minibatch from 0 to its final value over ``warmup`` epochs
(MVAE's annealing, Wu & Goodman 2018, App. A; official code anneals per minibatch)."""


def kl_weight(step: int, steps_per_epoch: int, warmup_epochs: float | None, beta: float) -> float:
    if not warmup_epochs or warmup_epochs <= 0:
        return beta
    return beta * min(1.0, step / (warmup_epochs * steps_per_epoch))
