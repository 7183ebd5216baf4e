"""scnf: semi-supervised learning with Semi-Conditional Normalizing Flows."""
from .architectures import mnist_scnf, vector_scnf
from .data import load_dataset
from .model import SemiConditionalFlow

__version__ = "0.1.0"

__all__ = ["SemiConditionalFlow", "load_dataset", "mnist_scnf", "vector_scnf", "__version__"]
