"""The one exception family of Bastion, mapped to CLI exit codes."""

from __future__ import annotations


class BastionError(Exception):
    """Base class: a failure a user can act on. Never shown with a traceback."""

    exit_code = 1


class BadInputError(BastionError):
    """The user's input (recipe, data file, argument) is wrong. Exit code 2."""

    exit_code = 2


class MissingResourceError(BastionError):
    """Something needed is absent: a file, a package, a GPU, a model. Exit code 3."""

    exit_code = 3


class NotImplementedStageError(BastionError):
    """A stage that has not been built yet. Exit code 1."""

    exit_code = 1
