"""The two errors of dataset conversion (both carry a one-line message naming the file)."""


class ConversionError(RuntimeError):
    """The whole conversion cannot run (bad input folder, bad dataset id)."""


class CaseError(ValueError):
    """One case cannot be converted; ``str(e)`` is the reason, naming the file."""
