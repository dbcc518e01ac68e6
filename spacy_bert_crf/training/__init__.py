"""Resumable training: spaCy's training loop with checkpoints (see loop.py)."""
from .checkpoints import ResumeError, latest_checkpoint
from .loop import train

__all__ = ["ResumeError", "latest_checkpoint", "train"]
