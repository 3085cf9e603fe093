"""Reading the YAML files of config/: ConfigError names the file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_yaml(path: Path, *, required: bool = True, hint: str = "set ENVLINK_CONFIG_DIR") -> Any:
    """The file's YAML (None when empty, or when missing and not `required`); ConfigError."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not required:
            return None
        raise ConfigError(f"{path}: file not found ({hint})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def read_yaml_model(path: Path, model: type[ModelT]) -> ModelT:
    """Read and validate a required config file; ConfigError names the file, place and problem."""
    raw = read_yaml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"{path}: {place}: {first['msg']} ({exc.error_count()} problem(s) in all)"
        ) from None
