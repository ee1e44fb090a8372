"""Model assembly: ``build_model`` composes registered parts into an ``OCRModel``; the
projectors; inference over pages."""
