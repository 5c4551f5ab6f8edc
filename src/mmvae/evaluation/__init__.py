"""Evaluation: pictures now; coherence, latent probes, likelihoods, relatedness in their own modules."""
