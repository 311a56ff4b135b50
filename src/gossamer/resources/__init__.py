"""The declarative model: kinds, YAML loading and validation. Pure: no sockets, no processes."""

from gossamer.resources.analysis import analyze
from gossamer.resources.base import Resource
from gossamer.resources.loader import LoadedResource, LoadResult, load_paths, load_text
from gossamer.resources.problems import Problem, Severity
from gossamer.resources.registry import MODELS
from gossamer.resources.validation import Validation, validate_paths

__all__ = [
    "MODELS",
    "LoadResult",
    "LoadedResource",
    "Problem",
    "Resource",
    "Severity",
    "Validation",
    "analyze",
    "load_paths",
    "load_text",
    "validate_paths",
]
