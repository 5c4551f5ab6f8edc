"""Errors a user can act on: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (arguments, data, run folders): the message names the problem and the fix."""
