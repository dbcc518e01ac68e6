"""spacy-bert-crf.LayerwiseAdamW.v1: the rate of every parameter is the configured one."""
import numpy
import pytest
import spacy
import torch
from spacy.cli.train import train as spacy_train
from spacy.util import registry
from thinc.api import Config, Model, PyTorchWrapper_v2

from spacy_bert_crf.optimizers import (
    LayerPlacementError,
    LayerwiseOptimizer,
    create_layerwise_adamw,
    parameter_depth,
)

from .util import (
    CONFIGS_DIR,
    MEAN_LOSS_CONFIG,
    config_differences,
    initialized,
    make_light_nlp,
    make_trf_nlp,
    short_training_overrides,
    write_corpus,
)

BASE = 0.01
DECAY = 0.5
HEAD = 4.0


def expected_scale(name: str) -> float:
    """Written out for the tiny 2-layer BERT, independently of the optimizer's own parsing."""
    if name.startswith("embeddings."):
        return DECAY**2
    if name.startswith("encoder.layer.0."):
        return DECAY
    if name.startswith("encoder.layer.1.") or name.startswith("pooler."):
        return 1.0
    assert "." not in name, name
    return HEAD


class Recording(LayerwiseOptimizer):
    """Records the change of each parameter's weight with the largest gradient (Adam's first
    step moves it by rate * sign(gradient); eps matters only for gradients near 0)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = {}

    def __call__(self, key, weights, gradient, *, lr_scale=1.0):
        index = numpy.unravel_index(numpy.abs(gradient).argmax(), gradient.shape)
        before, largest = float(weights[index]), float(abs(gradient[index]))
        weights, gradient = super().__call__(key, weights, gradient, lr_scale=lr_scale)
        if largest > 1e-6:
            self.steps[key] = abs(float(weights[index]) - before)
        return weights, gradient


def spacy_step(nlp, examples, optimizer):
    """One step as spaCy's training loop takes it: every update, then every finish_update."""
    nlp.update(examples, sgd=False)
    for _, proc in nlp.pipeline:
        if getattr(proc, "is_trainable", False):
            proc.finish_update(optimizer)
    optimizer.step_schedules()


def _bert(nlp):
    return [s for node in nlp.get_pipe("transformer").model.walk() for s in node.shims][0]._model


def recording(learn_rate=BASE, n_layers=2):
    # eps tiny, no weight decay: Adam's first step moves each weight by exactly rate * sign(g)
    return Recording(
        learn_rate, n_layers=n_layers, layer_decay=DECAY, head_lr_scale=HEAD,
        L2=0.0, eps=1e-14, use_averages=False,
    )


def test_registered():
    assert registry.optimizers.get("spacy-bert-crf.LayerwiseAdamW.v1") is create_layerwise_adamw


@pytest.mark.parametrize(
    "name,depth",
    [
        ("embeddings.word_embeddings.weight", 6),
        ("encoder.layer.0.attention.self.query.weight", 5),
        ("encoder.layer.5.output.LayerNorm.bias", 0),
        ("transformer.layer.2.ffn.lin1.weight", 3),  # DistilBERT
        ("h.1.attn.c_attn.weight", 4),  # GPT-2
        ("pooler.dense.weight", 0),
        ("transitions", -1),
        ("W", -1),
        ("encoder.layer.6.output.dense.weight", None),  # beyond n_layers
        ("encoder.rel_embeddings.weight", None),
        ("decoder.final_norm.weight", None),
    ],
)
def test_parameter_depth(name, depth):
    assert parameter_depth(name, 6) == depth


def test_rates_on_tiny_bert(tiny_bert_dir):
    nlp, examples = initialized(make_trf_nlp(tiny_bert_dir))
    optimizer = recording()
    spacy_step(nlp, examples, optimizer)
    bert_names = {name for name, p in _bert(nlp).named_parameters() if p.grad is not None}
    seen = {name for (_, name) in optimizer.lr_scales}
    assert bert_names <= seen
    assert {"transitions", "start", "end", "W", "b"} <= seen
    groups = set()
    for (_, name), step in optimizer.steps.items():
        scale = expected_scale(name)
        groups.add(scale)
        assert optimizer.lr_scales[(_, name)] == scale, name
        assert step == pytest.approx(BASE * scale, rel=1e-4), name
    assert groups == {DECAY**2, DECAY, 1.0, HEAD}


def test_rates_follow_schedule(tiny_bert_dir):
    config = Config().from_str(
        """
        [optimizer]
        @optimizers = "spacy-bert-crf.LayerwiseAdamW.v1"
        n_layers = 2
        layer_decay = 0.5
        head_lr_scale = 4.0
        L2 = 0.0
        eps = 0.00000000000001

        [optimizer.learn_rate]
        @schedules = "warmup_linear.v1"
        warmup_steps = 2
        total_steps = 10
        initial_rate = 0.01
        """
    )
    optimizer = registry.resolve(config)["optimizer"]
    assert isinstance(optimizer, LayerwiseOptimizer)
    used = []  # (step, parameter name, the rate Adam applied)
    adam = optimizer._adam

    def recording_adam(ops, weights, gradient, lr_scale, key, nr_upd):
        used.append((len(schedule), key[1], optimizer.learn_rate * lr_scale))
        return adam(ops, weights, gradient, lr_scale, key, nr_upd)

    optimizer._adam = recording_adam
    nlp, examples = initialized(make_trf_nlp(tiny_bert_dir))
    schedule = []
    for _ in range(4):
        schedule.append(optimizer.learn_rate)
        spacy_step(nlp, examples, optimizer)
    assert schedule == pytest.approx([0.0, 0.005, 0.01, 0.01 * 7 / 8])  # warmup_linear
    steps = {step for step, _, _ in used}
    names = {name for _, name, _ in used}
    assert steps == {1, 2, 3, 4}
    assert {"embeddings.word_embeddings.weight", "encoder.layer.1.output.dense.weight"} <= names
    for step, name, rate in used:
        assert rate == pytest.approx(schedule[step - 1] * expected_scale(name)), (step, name)


class Unknown(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rel_embeddings = torch.nn.Linear(2, 2)
        self.encoder = torch.nn.ModuleDict({"norm": torch.nn.LayerNorm(2)})

    def forward(self, x):
        return self.encoder["norm"](self.rel_embeddings(x))


def test_unplaced_parameters_are_listed():
    model: Model = PyTorchWrapper_v2(Unknown())
    X = numpy.ones((3, 2), dtype="float32")
    Y, backprop = model.begin_update(X)
    backprop(numpy.ones_like(Y))
    optimizer = create_layerwise_adamw(0.001, n_layers=2)
    with pytest.raises(LayerPlacementError) as err:
        model.finish_update(optimizer)
    # the first parameter the shim hands over is named, and no update happened to it
    assert "rel_embeddings.weight" in str(err.value)
    assert "use Adam.v1" in str(err.value)
    assert not optimizer.nr_update
    with pytest.raises(LayerPlacementError) as err:
        optimizer.place(["rel_embeddings.weight", "encoder.norm.bias", "W", "pooler.dense.bias"])
    message = str(err.value)
    assert "2 parameter(s)" in message
    assert "'rel_embeddings.weight'" in message and "'encoder.norm.bias'" in message
    assert "'W'" not in message and "'pooler.dense.bias'" not in message


def test_n_layers_checked(tiny_bert_dir):
    nlp, examples = initialized(make_trf_nlp(tiny_bert_dir))
    with pytest.raises(LayerPlacementError, match="n_layers to the encoder's number of layers"):
        spacy_step(nlp, examples, create_layerwise_adamw(0.001, n_layers=1))
    with pytest.raises(LayerPlacementError, match="set n_layers = 2"):
        spacy_step(nlp, examples, create_layerwise_adamw(0.001, n_layers=4))


@pytest.mark.parametrize(
    "setting", [{"n_layers": 0}, {"n_layers": 2.0}, {"layer_decay": 0.0}, {"head_lr_scale": 0.0}]
)
def test_invalid_settings(setting):
    kwargs = {"n_layers": 2, **setting}
    with pytest.raises(ValueError, match=next(iter(setting))):
        create_layerwise_adamw(0.001, **kwargs)


def test_without_transformer_everything_is_head():
    nlp, examples = initialized(make_light_nlp())
    optimizer = recording()
    spacy_step(nlp, examples, optimizer)
    assert optimizer.steps
    assert set(optimizer.lr_scales.values()) == {HEAD}


def test_layerwise_ablation_config_trains(tiny_bert_dir, tmp_path):
    """configs/ablations/en_conll03_layerwise.cfg: en_conll03_mean_loss.cfg but the optimizer, and
    it runs under `spacy train` (n_layers set to the tiny BERT's 2)."""
    path = CONFIGS_DIR / "ablations" / "en_conll03_layerwise.cfg"
    assert config_differences(path, MEAN_LOSS_CONFIG) == {
        "training.optimizer.@optimizers", "training.optimizer.n_layers",
        "training.optimizer.layer_decay", "training.optimizer.head_lr_scale",
    }
    overrides = short_training_overrides(tiny_bert_dir, write_corpus(tmp_path / "train.spacy"))
    overrides["training.optimizer.n_layers"] = 2
    spacy_train(path, tmp_path / "out", overrides=overrides)
    assert spacy.load(tmp_path / "out" / "model-last").get_pipe("crf_ner").labels
    overrides["training.optimizer.n_layers"] = 6
    with pytest.raises(LayerPlacementError, match="n_layers = 2"):
        spacy_train(path, tmp_path / "out6", overrides=overrides)
