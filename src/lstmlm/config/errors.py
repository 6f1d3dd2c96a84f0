"""The error of a value out of range, named by its field so that each caller can word it.

A Python caller reads the field's own name (``max_new_tokens must be positive, got 0``);
the CLI renders the same error with the flag that sets the field
(``--max-new-tokens must be positive, got 0``), see ``FieldError.as_flag``.
"""

from __future__ import annotations

from collections.abc import Callable


class FieldError(ValueError):
    """`field` (a dataclass field name) `problem` (e.g. "must be positive, got 0").

    `where` says which of several configs the field belongs to ("variant gru"); it leads
    the message.
    """

    def __init__(self, field: str, problem: str, where: str = ""):
        self.field = field
        self.problem = problem
        self.where = where
        super().__init__(self.render(lambda name: name))

    def render(self, name: Callable[[str], str]) -> str:
        """The message with the field spelled by `name(field)`."""
        head = f"{self.where}: " if self.where else ""
        return f"{head}{name(self.field)} {self.problem}"

    def as_flag(self, prefix: str = "") -> str:
        """The message as the CLI shows it: `--{prefix}{field with dashes} {problem}`."""
        return self.render(lambda name: "--" + prefix + name.replace("_", "-"))

    def within(self, where: str) -> FieldError:
        """The same error, said of `where` (e.g. a compare variant)."""
        inner = f"{where}: {self.where}" if self.where else where
        return FieldError(self.field, self.problem, inner)
