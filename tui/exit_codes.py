"""Exit codes of `pixl-tui` subcommands, for scripts that drive PIXL.

Each failure a script may want to react to differently has its own code; a
script can rely on these numbers not changing.
"""

OK = 0
"""The command did what was asked (for `load --wait` and `export --wait`: all finished well)."""

ERROR = 1
"""An unexpected error: the message says what; report it as a bug if it is not self-explanatory."""

USAGE = 2
"""The command line itself was wrong (unknown subcommand, missing argument); argparse's code."""

UNREACHABLE = 3
"""The raw plugin's REST API could not be reached (nothing listening, DNS, timeout)."""

AUTH_REFUSED = 4
"""The server refused the credentials (ORTHANC_USERNAME / ORTHANC_PASSWORD)."""

INVALID_INPUT = 5
"""The server or the client rejected the input: a bad extract, an unknown project, a bad control value."""

PARTIAL_FAILURE = 6
"""The work ran but not all of it succeeded: studies failed or were not found, an export failed,
or `failures` found failures to report."""

SERVER_ERROR = 7
"""The server answered with an internal error (5xx)."""

DECLINED = 8
"""The operator answered no to a confirmation; nothing was queued."""

TIMED_OUT = 9
"""`--wait --timeout` ran out before the work finished; the work goes on on the server."""
