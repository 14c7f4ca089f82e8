"""Conformance test suite for the SiliconCompiler remote job server API."""

__version__ = "0.1.0"
