"""The installed rescore version (recorded in every artifact)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rescore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
