"""Field coercion shared by the config schemas (podmeta.config, podmeta.meta.config)."""

from typing import Any


def coerce(name: str, value: Any, default: Any) -> Any:
  """Converts `value` to the type of the field's default, or raises."""
  try:
    if isinstance(default, bool):
      if not isinstance(value, bool):
        raise TypeError
      return value
    if isinstance(default, int):
      if isinstance(value, bool) or int(value) != value:
        raise TypeError
      return int(value)
    if isinstance(default, float):
      if isinstance(value, bool):
        raise TypeError
      return float(value)
    if isinstance(default, str):
      if not isinstance(value, str):
        raise TypeError
      return value
    if isinstance(default, tuple):
      if isinstance(value, (str, bytes)):
        raise TypeError
      items = tuple(value)
      if default and isinstance(default[0], int):
        if any(isinstance(v, bool) or int(v) != v for v in items):
          raise TypeError
        items = tuple(int(v) for v in items)
      return items
  except (TypeError, ValueError):
    pass
  else:
    return value
  raise ValueError(
      f"config field {name!r}: expected {type(default).__name__}, got {value!r}")
