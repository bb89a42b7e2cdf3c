"""Errors a user can act on. Each message names the problem and, where possible, the fix."""


class SkyClearError(Exception):
    """Base class: anything the user should see as a plain message, not a traceback."""


class InputError(SkyClearError):
    """An input raster does not fit the model or the other inputs."""


class ModelCardError(SkyClearError):
    """A model file is missing, unreadable, or its card is invalid."""


class Cancelled(SkyClearError):
    """The user cancelled the run; no output was written."""


class OutputError(SkyClearError):
    """An output could not be written completely (disk full, I/O error); nothing was committed."""
