"""Importing this module registers every built-in dataset."""
from . import mnist_label, polymnist, toy  # noqa: F401
from . import fashion, mnist_svhn, mnist_text, svhn, cub  # noqa: F401  (real datasets, issue 5)
from . import mnist_fonts  # noqa: F401  (offline MNIST-SVHN stand-in, issue 10)
