"""dentcae: few-label landmark detection on X-rays with unsupervised CAE pre-training."""
__version__ = "0.2.0"
