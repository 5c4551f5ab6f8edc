"""Posteriors, priors, likelihoods, noise providers, KL helpers on top of torch.distributions."""
from .likelihoods import Likelihood, make_likelihood
from .noise import GLOBAL_NOISE, FixedNoise, Noise, standard_noise
from .posteriors import POSTERIORS, detached, kl_to_prior, log_density, make_posterior, standard_prior
from .prior import PRIORS, Prior, prior_kind

__all__ = ["Likelihood", "make_likelihood", "GLOBAL_NOISE", "FixedNoise", "Noise", "standard_noise", "POSTERIORS",
           "detached", "kl_to_prior", "log_density", "make_posterior", "standard_prior", "PRIORS", "Prior",
           "prior_kind"]
