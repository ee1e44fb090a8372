"""Model assembly: ``build_model`` composes registered parts into an ``OCRModel``; projectors; inference over pages."""
