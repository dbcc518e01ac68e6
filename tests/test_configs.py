"""The shipped configs load, validate, and train with `spacy train` (tiny random BERT)."""
from pathlib import Path

import pytest
import spacy
from spacy.cli.train import train as spacy_train
from spacy.tokens import DocBin
from spacy.util import load_config, load_model_from_config

from .util import TRAIN_DATA, config_differences, make_examples

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.cfg"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_step_budget_ends_the_schedule(path):
    """A step budget, and the learning rate reaches 0 exactly where training stops (as in
    spaCy's own configs), also when max_steps is overridden."""
    training = load_config(path, interpolate=True)["training"]
    schedule = training["optimizer"]["learn_rate"]
    assert training["max_steps"] > 0
    assert training["max_epochs"] == 0  # no epoch limit that could stop training first
    assert schedule["@schedules"] == "warmup_linear.v1"
    assert schedule["total_steps"] == training["max_steps"]
    assert 0 < schedule["warmup_steps"] < schedule["total_steps"]
    assert training["max_steps"] % training["eval_frequency"] == 0  # the last step is scored
    assert training["logger"]["progress_bar"] is True
    raw = load_config(path, overrides={"training.max_steps": 7}, interpolate=False)
    assert raw.interpolate()["training"]["optimizer"]["learn_rate"]["total_steps"] == 7


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_wires_listener(path, tiny_bert_dir):
    overrides = {"paths.transformer": str(tiny_bert_dir)}
    config = load_config(path, overrides=overrides, interpolate=False)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    extra = {"en_conll03_multitask.cfg": ["tagger"]}.get(path.name, [])
    assert nlp.pipe_names == ["transformer", "crf_ner", *extra]
    for name in ["crf_ner", *extra]:
        assert nlp.get_pipe(name).model.get_ref("tok2vec").name.startswith("transformer-listener")


def test_spacy_train_with_sample_config(tiny_bert_dir, tmp_path):
    nlp = spacy.blank("en")
    db = DocBin(docs=[eg.reference for eg in make_examples(nlp, TRAIN_DATA)])
    db.to_disk(tmp_path / "train.spacy")
    overrides = {
        "paths.transformer": str(tiny_bert_dir),
        "paths.train": str(tmp_path / "train.spacy"),
        "paths.dev": str(tmp_path / "train.spacy"),
        "training.max_steps": 4,
        "training.eval_frequency": 2,
        "training.optimizer.learn_rate.warmup_steps": 1,
    }
    config_path = Path(__file__).resolve().parents[1] / "configs" / "en_sample.cfg"
    spacy_train(config_path, tmp_path / "out", overrides=overrides)
    trained = spacy.load(tmp_path / "out" / "model-last")
    assert trained.get_pipe("crf_ner").labels == ("LOC", "ORG", "PER")
    doc = trained(TRAIN_DATA[0][0])
    assert "crf_ner" in doc.spans


# What each shipped config may set differently from en_conll03.cfg (the one model, three
# budgets and two languages); anything else drifting apart is a copy-paste bug.
INTENDED_DIFFERENCES = {
    "en_sample.cfg": {
        "training.max_steps",
        "training.eval_frequency",
        "training.batcher.size",
        "training.optimizer.learn_rate.warmup_steps",
        "training.optimizer.learn_rate.initial_rate",
    },
    "zh_msra.cfg": {
        # no case features: Chinese characters have no case (CRFTagger.v1, no features block)
        "components.crf_ner.model.@architectures",
        *(f"components.crf_ner.model.features.{key}" for key in (
            "@architectures", "width", "attrs", "rows", "include_static_vectors")),
        "paths.transformer",
        "nlp.lang",
        "nlp.tokenizer",
        "nlp.tokenizer.@tokenizers",
        "training.max_steps",
        "training.eval_frequency",
        "training.optimizer.learn_rate.warmup_steps",
    },
}
# a Chinese corpus of the user's own (convert zh_chars): MSRA's recipe with a generic budget
INTENDED_DIFFERENCES["zh_zh_chars.cfg"] = INTENDED_DIFFERENCES["zh_msra.cfg"]


@pytest.mark.parametrize("name", sorted(INTENDED_DIFFERENCES))
def test_configs_differ_only_where_intended(name):
    differing = config_differences(CONFIGS[0].parent / name)
    assert differing <= INTENDED_DIFFERENCES[name], sorted(differing - INTENDED_DIFFERENCES[name])
    assert differing  # the budgets do differ: the comparison sees the values


def _emissions(nlp, text):
    doc = nlp(text, disable=["crf_ner"])
    return nlp.get_pipe("crf_ner").model.predict([doc])[0]


def test_case_features_see_the_case_an_uncased_encoder_drops(tiny_bert_dir, tmp_path):
    """configs/en_conll03.cfg: the recipe of configs/ablations/en_conll03_summed_loss.cfg plus
    case features (CRFTagger.v2 with a token-shape embedding). The tiny BERT lowercases, so
    "Paris" and "paris" get the same transformer vectors: only with the shape embedding do their
    emissions differ."""
    from .util import BASE_CONFIG, CONFIGS_DIR, short_training_overrides, write_corpus

    without = CONFIGS_DIR / "ablations" / "en_conll03_summed_loss.cfg"
    differing = config_differences(without, BASE_CONFIG)
    assert "components.crf_ner.model.@architectures" in differing
    assert all(key.startswith("components.crf_ner.model.features.") for key in
               differing - {"components.crf_ner.model.@architectures"})
    overrides = short_training_overrides(tiny_bert_dir, write_corpus(tmp_path / "train.spacy"))
    emissions = {}
    for name, config in (("case", BASE_CONFIG), ("plain", without)):
        spacy_train(config, tmp_path / name, overrides=overrides)
        nlp = spacy.load(tmp_path / name / "model-last")
        assert nlp.get_pipe("crf_ner").labels == ("LOC", "ORG", "PER")
        texts = ("Maria flew to Paris", "maria flew to paris")
        emissions[name] = [_emissions(nlp, text) for text in texts]
    plain_cased, plain_lower = emissions["plain"]
    assert plain_cased.shape == (4, 13)  # BILUO x 3 labels + O
    assert abs(plain_cased - plain_lower).max() < 1e-5
    case_cased, case_lower = emissions["case"]
    assert abs(case_cased - case_lower).max() > 1e-3


# The Chinese ablations were measured when zh_msra.cfg took crf_ner's mean loss; they pin it
MEAN_LOSS_PINNED = "components.crf_ner.normalize_loss"


def test_chinese_mention_swap_ablation_is_zh_msra_with_its_augmenter(tiny_bert_dir, tmp_path):
    """configs/ablations/zh_msra_entity_swap.cfg: zh_msra.cfg with the mention swap augmenter,
    nothing else; it trains with `spacy train` on Chinese characters."""
    from .util import CONFIGS_DIR, short_training_overrides

    config = CONFIGS_DIR / "ablations" / "zh_msra_entity_swap.cfg"
    assert config_differences(config, CONFIGS_DIR / "zh_msra.cfg") == {
        f"corpora.train.augmenter.{key}" for key in ("@augmenters", "level", "swap_prob", "path")
    } | {MEAN_LOSS_PINNED}
    nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {
        "@tokenizers": "spacy-bert-crf.ChineseCharTokenizer.v1"}}})
    texts = [("我在北京见到张三。", [(2, 4, "LOC"), (6, 8, "PER")]),
             ("李四去了上海。", [(0, 2, "PER"), (4, 6, "LOC")])] * 3
    db = DocBin(docs=[eg.reference for eg in make_examples(nlp, texts)])
    db.to_disk(tmp_path / "train.spacy")
    overrides = short_training_overrides(tiny_bert_dir, tmp_path / "train.spacy")
    spacy_train(config, tmp_path / "out", overrides=overrides)
    trained = spacy.load(tmp_path / "out" / "model-last")
    assert trained.get_pipe("crf_ner").labels == ("LOC", "PER")


def test_chinese_layerwise_ablation_is_zh_msra_with_its_optimizer():
    """configs/ablations/zh_msra_layerwise.cfg: zh_msra.cfg with LayerwiseAdamW.v1 (12 layers,
    decay 0.9, head 10x), nothing else; its optimizer resolves."""
    from spacy.util import load_config, registry

    from .util import CONFIGS_DIR

    config = CONFIGS_DIR / "ablations" / "zh_msra_layerwise.cfg"
    assert config_differences(config, CONFIGS_DIR / "zh_msra.cfg") == {
        f"training.optimizer.{key}" for key in ("@optimizers", "n_layers", "layer_decay",
                                                "head_lr_scale")
    } | {MEAN_LOSS_PINNED}
    assert load_config(config)["components"]["crf_ner"]["normalize_loss"] is True
    optimizer = load_config(config, interpolate=True)["training"]["optimizer"]
    assert type(registry.resolve({"o": optimizer})["o"]).__name__ == "LayerwiseOptimizer"
