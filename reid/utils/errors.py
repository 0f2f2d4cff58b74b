"""The one exception for bad input that the scripts turn into a single clear line, and how a failure is told
in that line."""


class UserError(Exception):
    """A problem with the user's data, files or options.

    The scripts catch it, print ``error: <message>`` on one line and exit with status 2; the message must
    name the file or option at fault and say what was expected.
    """


class Pause(Exception):
    """A run that stops on purpose to wait for the user (SSG++'s annotation step on one's own crops). The scripts
    print its message, which says how to go on, and exit with status :data:`PAUSE_STATUS`."""


PAUSE_STATUS = 3


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message (libraries' messages run over many lines), or its type's
    name when the message is empty."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
