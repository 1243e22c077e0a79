"""The version of seqwidgets, in a module of its own so anything may import it without loading
the package (``pyproject.toml`` reads it from here too).

Example:
    >>> from seqwidgets._version import __version__
    >>> __version__.count(".") >= 1
    True
"""

__version__ = "0.1.0"
