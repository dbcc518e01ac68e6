"""Resumable training: an interrupted and resumed run ends with the weights of an uninterrupted
one."""
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.training.initialize import init_nlp
from spacy.training.loop import train as spacy_train
from spacy.util import load_config, registry

from spacy_bert_crf.training import ResumeError, latest_checkpoint, train

from .util import pipeline_weights, training_config, write_train_dev

# 13 steps with a warmup, and a callback that interrupts the run once (`paths.crash_marker`).
SETTINGS = {
    "paths.crash_marker": None,
    "components.crf_ner.model.dropout": 0.2,
    "training.dropout": 0.1,
    "training.patience": 0,
    "training.before_update": {
        "@callbacks": "spacy-bert-crf-test.crash_once.v1",
        "marker": "${paths.crash_marker}",
    },
    "training.optimizer.learn_rate": {
        "@schedules": "warmup_linear.v1",
        "warmup_steps": 3,
        "total_steps": 13,
        "initial_rate": 0.001,
    },
}
CONFIG = training_config(max_steps=13, eval_frequency=4, batch_size=14, settings=SETTINGS)


class Crash(RuntimeError):
    pass


@registry.callbacks("spacy-bert-crf-test.crash_once.v1")
def crash_once(marker: str):
    """Raise once at step 7 (as a kill would stop the run), then never again."""

    def before_update(nlp, info):
        if info["step"] == 7 and not Path(marker).exists():
            Path(marker).touch()
            raise Crash("interrupted")

    return before_update


@pytest.fixture(scope="module")
def setup(tiny_bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    (root / "config.cfg").write_text(CONFIG, encoding="utf8")
    return root, write_train_dev(root, tiny_bert_dir)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        numpy.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} differs after resuming")


def test_resumed_run_matches_uninterrupted(setup, capsys):
    root, paths = setup
    done = root / "no-crash"
    done.touch()
    straight = train(root / "config.cfg", root / "straight",
                     overrides={**paths, "paths.crash_marker": str(done)}, checkpoint_every=2)

    # The uninterrupted run is what `spacy train` does with the same config and seed.
    config = load_config(root / "config.cfg", overrides={**paths, "paths.crash_marker": str(done)})
    (root / "spacy-train").mkdir()
    spacy_nlp, _ = spacy_train(init_nlp(config), root / "spacy-train")
    assert_same_weights(pipeline_weights(spacy_nlp),
                        pipeline_weights(spacy.load(root / "straight" / "model-last")))

    overrides = {**paths, "paths.crash_marker": str(root / "crashed")}
    with pytest.raises(Crash):
        train(root / "config.cfg", root / "resumed", overrides=overrides, checkpoint_every=2)
    checkpoint = latest_checkpoint(root / "resumed")
    assert checkpoint is not None and checkpoint.name == "step-000000006"
    assert [p.name for p in (root / "resumed" / "checkpoints").glob("step-*")] == [checkpoint.name]
    early = pipeline_weights(spacy.load(checkpoint / "nlp"))
    resumed = train(root / "config.cfg", root / "resumed", overrides=overrides,
                    checkpoint_every=2, resume=True)
    assert "Resuming from" in capsys.readouterr().out

    a, b = pipeline_weights(straight), pipeline_weights(resumed)
    assert len(a) > 20
    assert_same_weights(a, b)
    # A run that resumed from the wrong place would differ: the comparison can fail.
    with pytest.raises(AssertionError):
        assert_same_weights(early, a)
    # Saved pipelines are complete and agree.
    for run in ("straight", "resumed"):
        for sub in ("model-best", "model-last"):
            assert (root / run / sub / "meta.json").is_file()
    last_a = spacy.load(root / "straight" / "model-last")
    last_b = spacy.load(root / "resumed" / "model-last")
    text = "Maria Lopez flew to Lisbon on Monday."
    ents_a = [(e.text, e.label_) for e in last_a(text).ents]
    assert [(e.text, e.label_) for e in last_b(text).ents] == ents_a
    numpy.testing.assert_array_equal(
        last_a(text).spans["crf_ner"].attrs["scores"], last_b(text).spans["crf_ner"].attrs["scores"]
    )

    # Resuming a finished run does nothing more; resuming with another config is refused.
    again = train(root / "config.cfg", root / "resumed", overrides=overrides, resume=True)
    assert_same_weights(pipeline_weights(again), b)
    with pytest.raises(ResumeError, match="training.max_steps"):
        train(root / "config.cfg", root / "resumed",
              overrides={**overrides, "training.max_steps": 20}, resume=True)


def test_time_limit_stops_and_resumes_to_the_same_weights(setup, capsys):
    """A run stopped by its time limit after every step, and resumed each time, ends with the
    weights of an uninterrupted run."""
    root, paths = setup
    done = root / "no-crash-limit"
    done.touch()
    overrides = {**paths, "paths.crash_marker": str(done)}
    straight = train(root / "config.cfg", root / "straight-limit", overrides=overrides,
                     checkpoint_every=100)
    with pytest.raises(ValueError, match="time_limit"):
        train(root / "config.cfg", root / "limited", overrides=overrides, time_limit=-1.0)
    train(root / "config.cfg", root / "limited", overrides=overrides, time_limit=0.0)
    assert "Stopped at the time limit" in capsys.readouterr().out
    first = latest_checkpoint(root / "limited")
    assert first is not None and first.name == "step-000000001"
    runs = 1
    while True:
        resumed = train(root / "config.cfg", root / "limited", overrides=overrides,
                        time_limit=0.0, resume=True)
        runs += 1
        if "Stopped at the time limit" not in capsys.readouterr().out:
            break
        assert runs < 30, "the time-limited runs never finished"
    assert runs == 14  # max_steps 13: steps 0-13, one a run; the last one finishes the run
    assert_same_weights(pipeline_weights(straight), pipeline_weights(resumed))


def test_parameter_averages_are_saved_and_resumed(setup):
    """With `use_averages = true` model-last holds the optimizer's averages of every weight,
    the encoder's and the CRF's torch weights included (not the weights of the last step), and
    an interrupted run resumed from its checkpoint saves the same averaged pipeline."""
    root, paths = setup
    (root / "averages.cfg").write_text(
        training_config(max_steps=13, eval_frequency=4, batch_size=14,
                        settings={**SETTINGS, "training.optimizer.use_averages": True}),
        encoding="utf8")
    done = root / "no-crash-averages"
    done.touch()
    live = train(root / "averages.cfg", root / "averaged",
                 overrides={**paths, "paths.crash_marker": str(done)}, checkpoint_every=2)
    saved = pipeline_weights(spacy.load(root / "averaged" / "model-last"))
    trained = pipeline_weights(live)  # the weights of the last step
    assert saved.keys() == trained.keys()
    differ = {key.split("/")[0] + ("/torch" if "." in key.split("/")[1] else "/thinc")
              for key in saved if not numpy.array_equal(saved[key], trained[key])}
    assert {"transformer/torch", "crf_ner/torch"} <= differ

    overrides = {**paths, "paths.crash_marker": str(root / "crashed-averages")}
    with pytest.raises(Crash):
        train(root / "averages.cfg", root / "resumed-averages", overrides=overrides,
              checkpoint_every=2)
    train(root / "averages.cfg", root / "resumed-averages", overrides=overrides,
          checkpoint_every=2, resume=True)
    assert_same_weights(saved, pipeline_weights(
        spacy.load(root / "resumed-averages" / "model-last")))
