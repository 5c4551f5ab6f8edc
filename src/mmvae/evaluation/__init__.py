"""Evaluation of trained models (issue 4): one module per metric, a registry of steps, a report.

classifiers.py  coherence classifiers (small CNN / MLP), trained on the training split, cached
coherence.py    cross coherence S->t, joint coherence, synergy
latent.py       latent accuracy: a linear probe on latent means
likelihood.py   importance-sampled marginal, joint and conditional log-likelihoods
relatedness.py  closed-form W2 between posteriors (MEME §4.2)
pictures.py     sample grid, cross-generation grids, W2 plots, t-SNE
evaluate.py     ``evaluate(run)``: runs the registered metrics into RUN/evaluation/
report.py       report.md and the console table;  command.py: ``mmvae evaluate``

Python API: ``from mmvae.evaluation.evaluate import evaluate; evaluate("runs/x", classifiers={...})``.
"""

