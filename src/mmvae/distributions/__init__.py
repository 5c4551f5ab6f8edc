"""Posteriors, likelihoods, KL and 2-Wasserstein helpers on top of torch.distributions."""
from .likelihoods import Likelihood, make_likelihood
from .posteriors import POSTERIORS, detached, kl_to_prior, log_density, make_posterior, standard_prior

__all__ = ["Likelihood", "make_likelihood", "POSTERIORS", "detached", "kl_to_prior", "log_density",
           "make_posterior", "standard_prior"]
