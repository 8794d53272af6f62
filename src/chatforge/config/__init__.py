from chatforge.config.base import StrictModel
from chatforge.config.load import load_config, parse_overrides

__all__ = ["StrictModel", "load_config", "parse_overrides"]
