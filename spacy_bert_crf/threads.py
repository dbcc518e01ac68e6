"""torch threads in forked workers (`nlp.pipe(n_process=N)`).

spaCy forks its workers. A forked child that runs torch on the OpenMP thread pool it inherited
from a parent that already used it deadlocks (the pool's threads do not survive the fork); one
thread per worker avoids that, and N workers on N cores is the right split anyway.

Why an at-fork hook, and not something scoped to `nlp.pipe(n_process=...)`: spaCy starts the
workers itself and gives components no hook into them, and the first torch operation in a
worker is usually the transformer component's (spacy-transformers' own code, e.g. on
`TransformerModel.v3`), before any code of this plugin runs there. The fork is the only moment
at which the plugin can act in time. The hook is registered when a `crf_ner` component or a
`spacy-bert-crf.TransformerModel.v1` model is created, not when the plugin is imported, so
programs that import the plugin without building one of its pipelines fork as usual.
"""
import os
import sys

_registered = False


def _single_thread_torch() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def single_thread_in_forked_children() -> None:
    """From now on, processes forked from this one run torch on one thread (registered once)."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_single_thread_torch)
        _registered = True
