"""The mark of an error the project raises on purpose about what the user gave it (a file, a config key, a
teacher spec, a vocabulary): the tools print its message alone, without a traceback (`ovclip.cli`)."""


class UserInputError(Exception):
    """Base of the project's errors about the user's input; each also derives from the built-in type that
    says what went wrong (ValueError, OSError, RuntimeError), so `except ValueError` still catches it."""
