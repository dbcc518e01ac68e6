"""The error of the annotate command."""


class AnnotateError(Exception):
    """A problem with the inputs, the output folder or the pipeline, explained for the user."""
