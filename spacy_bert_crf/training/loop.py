"""`spacy train` that can be interrupted and resumed.

spaCy's training loop keeps its state in memory: the optimizer's moments, the step count that
drives the learning-rate schedule, the shuffled order of the epoch, the random generators and the
scores that decide ``model-best``. A run that is killed starts again from step 0. This loop runs
the same steps as ``spacy.training.loop.train`` (the same batches in the same order for the same
seed, the same updates, evaluations, patience, ``max_steps`` and ``max_epochs``) and every
``checkpoint_every`` steps writes everything it needs to continue into
``OUTPUT/checkpoints/step-N``: the pipeline's weights, the optimizer state, the position in the
epoch and its order, the random states (Python, NumPy, torch) and the evaluation history.
``resume=True`` continues from the newest complete checkpoint, so an interrupted and resumed run
ends with the same weights as an uninterrupted one.

``model-best`` and ``model-last`` are written to a temporary folder first and then renamed into
place, so a kill never leaves a half-written ``model-best`` behind (spaCy's loop deletes and
re-copies it at every new best score).
"""
import random
import shutil
import sys
from pathlib import Path
from timeit import default_timer as timer
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union, cast

import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.training.loop import (
    create_before_to_disk_callback,
    create_evaluation_callback,
    subdivide_batch,
    update_meta,
)
from thinc.api import Optimizer, constant, fix_random_seed, require_gpu
from wasabi import Printer

from .checkpoints import (
    CONFIG_FILE,
    DIR_CHECKPOINTS,
    DIR_MODEL_BEST,
    DIR_MODEL_LAST,
    OPTIMIZER_FILE,
    STATE_FILE,
    ResumeError,
    config_diff,
    get_random_states,
    latest_checkpoint,
    load_optimizer,
    save_checkpoint,
    save_models,
    set_random_states,
)


def train(
    config_path: Union[str, Path],
    output_path: Union[str, Path],
    *,
    overrides: Optional[Dict[str, Any]] = None,
    use_gpu: int = -1,
    resume: bool = False,
    checkpoint_every: Optional[int] = None,
    keep_checkpoints: int = 1,
    time_limit: Optional[float] = None,
    stdout: Optional[IO] = None,
    stderr: Optional[IO] = None,
) -> Language:
    """Train a pipeline from a config, as `spacy train` does, with resumable checkpoints.

    config_path (Union[str, Path]): The training config.
    output_path (Union[str, Path]): Where model-best, model-last and checkpoints/ go.
    overrides (Optional[Dict[str, Any]]): Config overrides ("section.key": value).
    use_gpu (int): GPU id, -1 for CPU.
    resume (bool): Continue from the newest checkpoint in output_path if there is one (the
        config and overrides must be the same as the interrupted run's); start afresh if not.
    checkpoint_every (Optional[int]): Write a checkpoint every this many steps (default: the
        config's eval_frequency). The last step always writes one.
    keep_checkpoints (int): How many checkpoints to keep (the newest ones).
    time_limit (Optional[float]): Stop after the first step that ends this many seconds after
        this call (loading and initialization included; for a machine lent for a while, a job
        queue's wall-clock limit): the step's checkpoint is written, and `resume=True`
        continues from it as if the run had not stopped. model-last is then that step's.
    RETURNS (Language): The trained pipeline (with the optimizer's averaged weights, if any).
    """
    msg = Printer(no_print=True)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    output_path = Path(output_path)
    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"Config file not found: {config_path}")
    if keep_checkpoints < 1:
        raise ValueError(f"keep_checkpoints must be at least 1, got {keep_checkpoints}.")
    if time_limit is not None and time_limit < 0:
        raise ValueError(f"time_limit must be at least 0 seconds, got {time_limit}.")
    stop_at = None if time_limit is None else timer() + time_limit
    if use_gpu >= 0:
        require_gpu(use_gpu)
    config = util.load_config(config_path, overrides=dict(overrides or {}), interpolate=False)
    config_text = config.to_str()
    checkpoint = latest_checkpoint(output_path) if resume else None
    if checkpoint is not None:
        saved = (checkpoint / CONFIG_FILE).read_text(encoding="utf8")
        if saved != config_text:
            raise ResumeError(
                f"Cannot resume from {checkpoint}: it was trained with a different config or "
                f"different overrides. Resume with the same ones, or train into a new output "
                f"folder. Differences: {config_diff(saved, config_text)}"
            )
        nlp = util.load_model_from_path(checkpoint / "nlp")
        state = srsly.read_json(checkpoint / STATE_FILE)
        stdout.write(msg.info(f"Resuming from {checkpoint} (step {state['step']})") + "\n")
    else:
        nlp = init_nlp(config, use_gpu=use_gpu)
        state = None
        if output_path.exists():
            for sub in (DIR_MODEL_BEST, DIR_MODEL_LAST, DIR_CHECKPOINTS):
                shutil.rmtree(output_path / sub, ignore_errors=True)
    output_path.mkdir(parents=True, exist_ok=True)
    return _train_loop(
        nlp,
        output_path,
        config_text,
        state=state,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        stop_at=stop_at,
        stdout=stdout,
        stderr=stderr,
    )


def _train_loop(
    nlp: Language,
    output_path: Path,
    config_text: str,
    *,
    state: Optional[Dict[str, Any]],
    checkpoint: Optional[Path],
    checkpoint_every: Optional[int],
    keep_checkpoints: int,
    stop_at: Optional[float],
    stdout: IO,
    stderr: IO,
) -> Language:
    """spaCy's `train` + `train_while_improving` (spacy/training/loop.py, v3.8) with the loop's
    state made explicit, so that it can be saved and restored."""
    msg = Printer(no_print=True)
    config = nlp.config.interpolate()
    if config["training"]["seed"] is not None:
        fix_random_seed(config["training"]["seed"])
    T = util.registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = util.resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer: Optimizer = T["optimizer"]
    batcher = T["batcher"]
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])
    exclude = T["frozen_components"]
    annotating = T["annotating_components"]
    before_update = T["before_update"]
    max_epochs, max_steps, patience = T["max_epochs"], T["max_steps"], T["patience"]
    eval_frequency = T["eval_frequency"]
    every = checkpoint_every or eval_frequency
    if every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {every}.")
    if max_epochs < 0:
        raise ValueError(
            "Resumable training reads the training corpus once (max_epochs >= 0); "
            "max_epochs = -1 streams it, which cannot be replayed to a position."
        )
    # an iterator either way (thinc types constant() as an Iterable; it is a generator)
    dropouts = cast(
        Iterator[float],
        constant(T["dropout"]) if isinstance(T["dropout"], float) else T["dropout"],
    )

    # The corpus is read once, as spaCy does for max_epochs >= 0. An augmenter draws from the
    # random generators here, so a resumed run reads it from the same random state.
    if checkpoint is not None:
        set_random_states(srsly.read_msgpack(checkpoint / "rng_corpus.msg"))
    rng_corpus = get_random_states()
    examples = list(train_corpus(nlp))
    if not examples:
        raise ValueError(f"The training corpus {T['train_corpus']!r} holds no examples.")

    step, epoch, batch_index, order = 0, 0, 0, None
    results: List[Tuple[float, int]] = []
    losses: Dict[str, float] = {}
    words_seen, seconds_before, finished = 0, 0.0, False
    if state is not None and checkpoint is not None:
        step, epoch = state["step"], state["epoch"]
        batch_index, order = state["batch_index"], state["order"]
        results = [(float(s), int(st)) for s, st in state["results"]]
        losses = dict(state["losses"])
        words_seen, seconds_before, finished = state["words"], state["seconds"], state["finished"]
        load_optimizer(optimizer, nlp, srsly.read_msgpack(checkpoint / OPTIMIZER_FILE))
        for _ in range(step):  # the schedules' position (learning rate, dropout)
            optimizer.step_schedules()
            next(dropouts)
        set_random_states(srsly.read_msgpack(checkpoint / "rng.msg"))

    def batches() -> Iterator[Tuple[int, int, List[int], list]]:
        """(epoch, index in the epoch, the epoch's order, batch) from the saved position on.

        spaCy shuffles its list of examples in place at the start of every epoch; shuffling a
        list of indices the same way gives the same orders and draws the same random numbers.
        """
        ep, skip = epoch, batch_index
        current = list(order) if order is not None else list(range(len(examples)))
        shuffle = order is None
        while max_epochs < 1 or ep != max_epochs:
            if shuffle:
                random.shuffle(current)
            for i, batch in enumerate(batcher([examples[j] for j in current])):
                if i >= skip:
                    yield ep, i, list(current), batch
            ep, skip, shuffle = ep + 1, 0, True

    stdout.write(msg.info(f"Pipeline: {nlp.pipe_names}") + "\n")
    stdout.write(msg.info(f"Initial learn rate: {optimizer.learn_rate}") + "\n")
    with nlp.select_pipes(disable=exclude):
        log_step, finalize_logger = T["logger"](nlp, stdout, stderr)
    start_time = timer()
    try:
        for ep, index, current, batch in batches() if not finished else iter(()):
            if before_update:
                before_update(nlp, {"step": step, "epoch": ep})
            dropout = next(dropouts)
            for subbatch in subdivide_batch(batch, T["accumulate_gradient"]):
                nlp.update(
                    subbatch, drop=dropout, losses=losses, sgd=False,  # type: ignore[arg-type]
                    exclude=exclude, annotates=annotating,
                )
            for name, proc in nlp.pipeline:
                if name not in exclude and getattr(proc, "is_trainable", False):
                    pipe = cast(TrainablePipe, proc)  # is_trainable: a TrainablePipe
                    if pipe.model not in (True, False, None):
                        pipe.finish_update(optimizer)
            optimizer.step_schedules()
            is_best: Optional[bool] = None
            score, other_scores = None, None
            if not step % eval_frequency:
                with nlp.use_params(optimizer.averages):
                    score, other_scores = evaluate()
                results.append((score, step))
                is_best = score == max(results)[0]
            words_seen += sum(len(eg) for eg in batch)
            info: Dict[str, Any] = {
                "epoch": ep, "step": step, "score": score, "other_scores": other_scores,
                "losses": losses, "checkpoints": results, "words": words_seen,
                "seconds": int(seconds_before + timer() - start_time),
            }
            if is_best is not None:
                with nlp.select_pipes(disable=exclude):
                    update_meta(T, nlp, info)
                save_models(nlp, optimizer, before_to_disk, output_path, best=is_best)
                info["output_path"] = str(output_path / DIR_MODEL_LAST)
            log_step(info if is_best is not None else None)
            if is_best is not None:
                losses = {}
            best_step = -max((s, -st) for s, st in results)[1] if results else 0
            stop = bool(patience and (step - best_step) >= patience)
            stop = stop or bool(max_steps and step >= max_steps)
            step += 1
            timed_out = stop_at is not None and timer() >= stop_at
            if stop or timed_out or not step % every:
                position = {"epoch": ep, "batch_index": index + 1, "order": current}
                loop_state = {
                    "step": step, **position, "results": results, "losses": losses,
                    "words": words_seen, "seconds": seconds_before + timer() - start_time,
                    "finished": stop,
                }
                save_checkpoint(
                    nlp, optimizer, output_path, config_text, rng_corpus, loop_state,
                    keep=keep_checkpoints,
                )
            if stop:
                break
            if timed_out:
                stdout.write(msg.warn(
                    f"Stopped at the time limit after {step} steps; resume to continue"
                ) + "\n")
                break
    finally:
        finalize_logger()
    save_models(nlp, optimizer, before_to_disk, output_path, best=False)
    if optimizer.averages:
        nlp.use_params(optimizer.averages)
    saved = msg.good("Saved pipeline to output directory", output_path / DIR_MODEL_LAST)
    stdout.write(saved + "\n")
    return nlp
