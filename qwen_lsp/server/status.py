"""The ``qwenLsp/status`` notification for editor status bars."""

from __future__ import annotations

from typing import Any, Callable

METHOD = "qwenLsp/status"
LOADING, READY, GENERATING, ERROR = "loading", "ready", "generating", "error"


class StatusReporter:
    """Sends ``{state, message, model}`` whenever the state or message changes."""

    def __init__(self, notify: Callable[[str, Any], None]) -> None:
        self._notify = notify
        self.state: str | None = None
        self.message = ""
        self.model: str | None = None

    def set(self, state: str, message: str = "", model: str | None = None) -> None:
        if model is not None:
            self.model = model
        if (state, message) == (self.state, self.message):
            return
        self.state, self.message = state, message
        self._notify(METHOD, {"state": state, "message": message, "model": self.model})
