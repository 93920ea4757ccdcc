"""varshift: see, measure and fix the variance shift between dropout and batch normalization."""

__version__ = "0.1.0"
