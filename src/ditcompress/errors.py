"""User-facing errors: their message is one line that names the bad key, value or file."""


class UserError(ValueError):
    """A problem with the user's input (params, files, ids); stages print it and exit 2."""
