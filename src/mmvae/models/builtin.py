"""Importing this module registers models that live in their own modules (e.g. MEME)."""
