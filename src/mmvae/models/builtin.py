"""Importing this module registers models that live in their own modules (e.g. MEME)."""
from . import fmmvae  # noqa: F401  (factorised MMVAE with InfoNCE)
from . import meme  # noqa: F401,E402  (MEME: its own module, registers "meme")
from . import mvtcae  # noqa: F401,E402  (MVTCAE: total-correlation objective)
from . import jmvae  # noqa: F401,E402  (JMVAE: joint encoder + JM KL terms)
from . import mmjsd  # noqa: F401,E402  (mmJSD: Jensen-Shannon divergence with a dynamic prior)
from . import telbo  # noqa: F401,E402  (TELBO: triple ELBO with a joint encoder)
from . import crmvae  # noqa: F401,E402  (CRMVAE: coordination + unimodal reconstructions)
from . import cvae  # noqa: F401,E402  (conditional VAE of one modality given the others)
