"""Loaders for real EIT data sets (KIT4, KTC2023) and the :class:`EITDataset` they return.

Loaders take a path to the data (nothing is bundled): see ``shared/data/README.md``
for where the files come from and what they hold.
"""

from .dataset import EITDataset, data_dir, resolve_data_path
from .kit4 import load_kit4
from .ktc import load_ktc2023, load_ktc_mesh, load_ktc_reference, load_ktc_truth, save_ktc_segmentation

__all__ = ["EITDataset", "data_dir", "resolve_data_path", "load_kit4", "load_ktc2023", "load_ktc_reference", "load_ktc_truth",
           "save_ktc_segmentation", "load_ktc_mesh"]
