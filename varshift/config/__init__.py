"""varshift-train's configuration: the schema (the one home of every default) and the checks before training.

>>> from varshift.config import register_schema, to_plain, validate
"""

from varshift.config.schema import Config, register_schema, schema_keys, to_plain
from varshift.config.validate import validate

__all__ = ["Config", "register_schema", "schema_keys", "to_plain", "validate"]
