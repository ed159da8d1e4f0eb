"""dentcae: few-label landmark detection on X-rays with unsupervised CAE pre-training."""
from .version import __version__  # noqa: F401
from . import plugins  # noqa: F401,E402  (registers every head and pre-training)
