"""The library's base for errors in what a user hands it (data files, checkpoints, a training that
diverged), so a front end can tell them from bugs."""


class InputError(Exception):
    """Bad input, not a bug: the message says what is wrong and what to do."""
