"""Config loading: YAML layers, references, overrides and schema checks."""
from .config import MindFormerConfig, load_config, plain
from .loader import ConfigError, parse_value
from .schema import SCHEMA, validate_config

__all__ = ["MindFormerConfig", "load_config", "ConfigError", "parse_value", "plain", "SCHEMA", "validate_config"]
