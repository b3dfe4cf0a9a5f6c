"""Implementation of the rule language; the public names live in :mod:`segmint.segments.rules`."""
