"""The package's one error base. Every problem a command reports in one clean line (a backend
that cannot be used, a data file that is missing, a refused config, a damaged checkpoint, a run
that cannot go on) is a FlmnError, and cli.run_command turns it into `prog: error: message`.

This module and cli.py are the bottom layer: they import nothing else of the package, so that
every layer (core, data, runs, the commands) may import them.
"""


class FlmnError(Exception):
    """A problem whose message says, in one line, what is wrong and what to do."""
