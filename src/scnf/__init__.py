"""scnf: semi-supervised learning with Semi-Conditional Normalizing Flows."""
from . import bijectors
from .models.builders import image_scnf, mnist_scnf, vector_scnf
from .data import load_dataset
from .estimator import SCNFClassifier
from .runs.run import load_run
from .models.flow import SemiConditionalFlow

__version__ = "0.1.0"

__all__ = ["SCNFClassifier", "SemiConditionalFlow", "bijectors", "image_scnf", "load_dataset", "load_run", "mnist_scnf",
           "vector_scnf", "__version__"]
