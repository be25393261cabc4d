"""The one error type of the compression operators; its message is one line naming the bad value."""

from ditcompress.errors import UserError


class CompressionError(UserError):
    """A compression request that cannot be carried out (unknown block, bad ratio or rank multiple...)."""
