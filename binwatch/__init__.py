"""binwatch: count items in warehouse bin photos and flag bins that do not match the manifest."""

from __future__ import annotations

__all__ = ["__version__"]

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("binwatch")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
