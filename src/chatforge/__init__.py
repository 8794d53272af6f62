"""chatforge: from raw text to an aligned chat model."""

__version__ = "0.1.0"
