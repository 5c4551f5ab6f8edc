"""Importing this module registers models that live in their own modules (e.g. MEME)."""
from . import fmmvae  # noqa: F401  (factorised MMVAE with InfoNCE)
from . import meme  # noqa: F401,E402  (MEME: its own module, registers "meme")
from . import jnf  # noqa: F401,E402  (JNF: joint VAE, then unimodal flow posteriors)
