"""segmint: data-driven customer segmentation and personalization.

The public Python API. Everything else is implementation.
"""

from segmint.errors import (
    ConfigError,
    DataValidationError,
    EngineError,
    NotFittedError,
    RuleEvaluationError,
    RuleSyntaxError,
    SegmintError,
    SourceNotFoundError,
    UserInputError,
)
from segmint.project import Project, data_dictionary, init_project

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataValidationError",
    "EngineError",
    "NotFittedError",
    "Project",
    "RuleEvaluationError",
    "RuleSyntaxError",
    "SegmintError",
    "SourceNotFoundError",
    "UserInputError",
    "data_dictionary",
    "init_project",
]
