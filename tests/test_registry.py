"""Entry points in setup.cfg and the decorators register exactly the same names."""
import configparser
import importlib
from pathlib import Path

import pytest
import spacy
from spacy.util import registry

import spacy_bert_crf  # noqa: F401

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
REGISTRIES = {
    "spacy_architectures": registry.architectures,
    "spacy_scorers": registry.scorers,
    "spacy_tokenizers": registry.tokenizers,
}


def entry_points():
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    out = {}
    for group, block in parser["options.entry_points"].items():
        for line in block.strip().splitlines():
            name, target = (part.strip() for part in line.split("="))
            out.setdefault(group, {})[name] = target
    return out


def load_target(target):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_entry_points_match_decorators(group):
    declared = entry_points()[group]
    registered = {n for n in REGISTRIES[group].get_all() if n.startswith("spacy-bert-crf.")}
    assert set(declared) == registered
    for name, target in declared.items():
        assert REGISTRIES[group].get(name) is load_target(target)
        assert name.rsplit(".", 1)[-1].startswith("v")


def test_factories_match():
    declared = entry_points()["spacy_factories"]
    assert set(declared) == {"crf_ner"}
    meta = spacy.Language.get_factory_meta("crf_ner")
    assert meta.factory == "crf_ner"
    assert registry.factories.get("crf_ner") is load_target(declared["crf_ner"])
    assert "doc.ents" in meta.assigns
