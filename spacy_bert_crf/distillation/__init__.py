"""Knowledge distillation: a teacher pipeline's per-token CRF marginals as soft targets for a
student crf_ner (see loss.py for the loss, targets.py for the teacher's annotation and run.py for
the command)."""
from .loss import SOFT_TARGETS_KEY, aligned_soft_targets, distillation_loss

__all__ = ["SOFT_TARGETS_KEY", "aligned_soft_targets", "distillation_loss"]
