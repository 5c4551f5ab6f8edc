"""Importing this module registers every built-in dataset."""
from . import mnist_label, polymnist, toy  # noqa: F401
