"""Importing this module registers models that live in their own modules (e.g. MEME)."""
from . import fmmvae  # noqa: F401  (factorised MMVAE with InfoNCE)
from . import meme  # noqa: F401,E402  (MEME: its own module, registers "meme")
from . import mmvaeplus  # noqa: F401,E402  (MMVAE+: shared + private latents, auxiliary priors)
from . import dmvae  # noqa: F401,E402  (DMVAE: product-of-experts shared latent + private latents)
from . import cmvae  # noqa: F401,E402  (CMVAE: MMVAE+ with a clustering prior)
