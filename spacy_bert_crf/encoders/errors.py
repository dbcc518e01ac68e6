"""The error every encoder-building function raises."""


class EncoderError(ValueError):
    """An encoder can't be built: unknown name, missing source package, bad output folder."""
