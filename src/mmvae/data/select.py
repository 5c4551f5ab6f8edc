"""Train on a subset of a dataset's modalities (``--set modalities=[m0,m1]``)."""
from __future__ import annotations

from dataclasses import replace

from ..errors import UserError
from .dataset import DatasetSplits, MultimodalDataset


def _keep(data: MultimodalDataset, names: list[str]) -> MultimodalDataset:
    return replace(data, specs={m: data.specs[m] for m in names}, data={m: data.data[m] for m in names},
                   mask={m: data.mask[m] for m in names})


def select_modalities(splits: DatasetSplits, names: list[str] | None) -> DatasetSplits:
    if not names:
        return splits
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [m for m in names if m not in splits.specs]
    if unknown:
        raise UserError(f"modalities {unknown} are not in the data: choose from {list(splits.specs)}")
    return DatasetSplits(_keep(splits.train, list(names)), _keep(splits.test, list(names)), splits.name)
