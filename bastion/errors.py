"""The one exception family of Bastion, mapped to the CLI's documented exit codes.

| code | class                 | meaning                                                      |
|------|-----------------------|--------------------------------------------------------------|
| 2    | BadInputError         | the recipe, a data file or an argument is wrong              |
| 3    | MissingResourceError  | a file, package, GPU, model or earlier stage's output is absent |
| 4    | ToolError             | an external tool or a verification failed (its log is named) |
| 130  | (KeyboardInterrupt)   | interrupted                                                  |
| 1    | anything else         | unexpected: a bug (``--debug`` shows the traceback)          |
"""

from __future__ import annotations


class BastionError(Exception):
    """Base class: a failure a user can act on. Never shown with a traceback."""

    exit_code = 1


class BadInputError(BastionError):
    """The user's input (recipe, data file, argument) is wrong. Exit code 2."""

    exit_code = 2


class MissingResourceError(BastionError):
    """Something needed is absent: a file, a package, a GPU, a model, an earlier stage's output. Exit code 3."""

    exit_code = 3


class StaleStageError(MissingResourceError):
    """An earlier stage failed, never ran, or ran on other inputs than it would see now. Exit code 3."""


class ToolError(BastionError):
    """An external tool (Axolotl, llama.cpp's converter or quantiser) or a verification failed. Exit code 4."""

    exit_code = 4
