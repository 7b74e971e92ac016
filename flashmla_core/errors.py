"""The two errors users see, and the record of a backend that failed to load."""
from __future__ import annotations

from dataclasses import dataclass


class ContractError(ValueError):
    """An argument violates the contract (docs/contract.md). Raised before any kernel runs.

    The message names the argument, what was expected and what was given.
    """

    def __init__(self, argument: str, expected: str, given: object):
        self.argument = argument
        self.expected = expected
        self.given = given
        super().__init__(f"{argument}: expected {expected}, got {given}")


class NoBackendError(RuntimeError):
    """No installed backend can serve the request; the message lists every backend's reasons."""

    def __init__(self, request: str, reasons: dict[str, list[str]]):
        self.request = request
        self.reasons = reasons
        lines = [f"no flashmla backend can run {request}"]
        if not reasons:
            lines.append("  (no backends are installed or enabled)")
        for name, why in reasons.items():
            lines.append(f"  {name}:")
            lines.extend(f"    - {r}" for r in why)
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class BackendLoadFailure:
    """An entry point that could not be loaded; shown by `flashmla info` and in NoBackendError."""

    name: str
    distribution: str
    version: str
    error: str
