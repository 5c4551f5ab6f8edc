"""Objectives: ELBO, IWAE, DReG for any fusion; MVAE's subsampled sum (MEME's bound lives with MEME)."""
from .estimators import (ESTIMATORS, AuthorsDReG, DReG, ELBO, IWAE, Estimator, Strata, make_estimator,
                         register_estimator)
from .subsampled import SubsampledObjective, training_subsets

__all__ = ["ESTIMATORS", "AuthorsDReG", "DReG", "ELBO", "IWAE", "Estimator", "Strata", "make_estimator",
           "register_estimator", "SubsampledObjective", "training_subsets"]
