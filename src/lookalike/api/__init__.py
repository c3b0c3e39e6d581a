"""HTTP layer: ``create_app(catalog)`` serves the JSON API under /api and the web app at /.

Thin by design — every endpoint calls the library (``Catalog`` and the feature modules) and only
translates HTTP to Python and back.
"""
from lookalike.api.main import create_app

__all__ = ["create_app"]
