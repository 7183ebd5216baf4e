"""Data: MNIST / Fashion-MNIST (IDX files, checked fetchers), toy problems, labelled splits."""
from .images import (DATASETS, SPLITS, DatasetFetchError, DatasetNotFoundError, default_data_dir,
                     fetch_dataset, labelled_split, load_dataset, load_idx)
from .toy import TOY_DATASETS, make_toy, toy_problem

__all__ = ["DATASETS", "SPLITS", "DatasetFetchError", "DatasetNotFoundError", "TOY_DATASETS", "default_data_dir",
           "fetch_dataset", "labelled_split", "load_dataset", "load_idx", "make_toy", "toy_problem"]
