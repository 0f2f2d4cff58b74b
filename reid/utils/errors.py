"""The one exception for bad input that the scripts turn into a single clear line."""


class UserError(Exception):
    """A problem with the user's data, files or options.

    The scripts catch it, print ``error: <message>`` on one line and exit with status 2; the message must
    name the file or option at fault and say what was expected.
    """
