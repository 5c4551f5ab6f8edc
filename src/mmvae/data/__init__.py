"""Data: sources (file formats, offline samples), builders, and the batch type."""
from .batch import Batch
from .dataset import DatasetSplits, ModalitySpec, MultimodalDataset, validation_split
from .registry import DATASETS, load_dataset, register_dataset

__all__ = ["Batch", "DatasetSplits", "ModalitySpec", "MultimodalDataset", "validation_split",
           "DATASETS", "load_dataset", "register_dataset"]
