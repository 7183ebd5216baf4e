"""Data: MNIST / Fashion-MNIST (IDX files, checked fetchers), toy problems, labelled splits."""
from .images import (SPLITS, DatasetFetchError, DatasetNotFoundError, default_data_dir, fetch_dataset,
    labelled_split, load_dataset, load_idx)
from .toy import make_toy, toy_problem

__all__ = ["SPLITS", "DatasetFetchError", "DatasetNotFoundError", "default_data_dir",
           "fetch_dataset", "labelled_split", "load_dataset", "load_idx", "make_toy", "toy_problem"]
