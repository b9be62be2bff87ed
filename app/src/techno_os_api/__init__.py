"""Techno OS API service."""

# The single source of the version: the wheel, /version, the techno_os_build_info metric, the
# artifact manifest and the image tag all read it from here.
__version__ = "1.1.0"
