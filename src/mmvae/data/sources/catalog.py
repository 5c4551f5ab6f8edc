"""The published files of the real datasets: names, checksums as published, and mirrors."""
from __future__ import annotations

from .cache import DataSource, RemoteFile

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                   "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
IDX_PARTS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_files(md5s: tuple[str, ...], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    # Accept the uncompressed file and the dotted spelling some copies use (train-images.idx3-ubyte).
    return tuple(RemoteFile(f"{p}.gz", f"md5:{m}", tuple(u + f"{p}.gz" for u in mirrors),
                            (p, p.replace("-idx", ".idx", 1)))
                 for p, m in zip(IDX_PARTS, md5s))


MNIST = DataSource("mnist", _idx_files(("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
                                       MNIST_MIRRORS),
                   homepage="https://yann.lecun.com/exdb/mnist/")

FASHION_MNIST = DataSource(
    "fashion-mnist",
    _idx_files(("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"), FASHION_MIRRORS),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian/Ubuntu package dataset-fashion-mnist
)

SVHN = DataSource("svhn", (
    RemoteFile("train_32x32.mat", "md5:e26dedcc434d2e4c54c9b2d4a06d8373", (SVHN_URL + "train_32x32.mat",)),
    RemoteFile("test_32x32.mat", "md5:eb5a983be6a315427106f1b164d9cef3", (SVHN_URL + "test_32x32.mat",)),
), homepage=SVHN_URL)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
