"""User settings: defaults, validation, and merging from the client's several sources."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SECTION = "qwenLsp"
LOG_LEVELS = ("error", "warning", "info", "debug")

# camelCase key -> (field, type, min, max)
_NUMERIC = {
    "contextBudget": ("context_budget", int, 256, 32768),
    "maxTokens": ("max_tokens", int, 1, 1024),
    "timeBudgetMs": ("time_budget_ms", int, 50, 60000),
    "debounceMs": ("debounce_ms", int, 0, 2000),
    "candidates": ("candidates", int, 1, 5),
    "maxFileBytes": ("max_file_bytes", int, 1024, 64 * 1024 * 1024),
}
KNOWN_KEYS = frozenset(_NUMERIC) | {"model", "logLevel", "enable"}


@dataclass(frozen=True)
class Settings:
    """Effective settings; every field has a safe default."""

    model: str = "default"
    context_budget: int = 944  # prompt tokens in all (the pipeline's evaluated CPU profile)
    max_tokens: int = 64
    time_budget_ms: int = 3000
    debounce_ms: int = 60
    candidates: int = 1
    max_file_bytes: int = 2 * 1024 * 1024
    enable: dict[str, bool] = field(default_factory=dict)
    log_level: str = "info"

    def enabled_for(self, language_id: str) -> bool:
        """Whether completion is on for ``language_id`` (``"*"`` sets the default)."""
        return self.enable.get(language_id, self.enable.get("*", True))


def merge_settings(base: Settings, raw: Any) -> tuple[Settings, list[str]]:
    """Apply the known keys of ``raw`` over ``base``; returns the result and one warning per
    unknown or invalid value (which keeps the value from ``base``)."""
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [f"settings must be an object, got {type(raw).__name__}"]
    if isinstance(raw.get(SECTION), dict):
        raw = raw[SECTION]
    warnings: list[str] = []
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NUMERIC:
            name, typ, lo, hi = _NUMERIC[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                warnings.append(f"{key}: expected a number in {lo}..{hi}, got {value!r}; keeping {getattr(base, name)}")
            else:
                changes[name] = typ(value)
        elif key == "model":
            if isinstance(value, str) and value.strip():
                changes["model"] = value.strip()
            else:
                warnings.append(f"model: expected a name, path or URL, got {value!r}; keeping {base.model!r}")
        elif key == "logLevel":
            if isinstance(value, str) and value.lower() in LOG_LEVELS:
                changes["log_level"] = value.lower()
            else:
                warnings.append(f"logLevel: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
        elif key == "enable":
            if isinstance(value, bool):
                changes["enable"] = {"*": value}
            elif isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, bool) for k, v in value.items()):
                changes["enable"] = dict(value)
            else:
                warnings.append(f"enable: expected true/false or {{languageId: bool}}, got {value!r}")
        else:
            warnings.append(f"unknown setting {key!r} ignored")
    return replace(base, **changes), warnings

