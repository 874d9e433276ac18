"""The running Lattice version, from the installed distribution."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("lattice")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.1.0+source"
