"""Entry points in setup.cfg and the decorators register exactly the same names."""
import configparser
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.util import registry

import spacy_bert_crf

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
# entry point group -> registry: spaCy's are "spacy_<name>", thinc's (optimizers) "thinc_<name>"
REGISTRY_GROUPS = ("spacy_", "thinc_")


def registry_of(group):
    for prefix in REGISTRY_GROUPS:
        if group.startswith(prefix):
            return getattr(registry, group[len(prefix):])
    raise ValueError(f"unknown entry point group {group!r}")


def import_every_module():
    """The package __init__ registers nothing itself: import every module, as a config would."""
    for info in pkgutil.walk_packages(spacy_bert_crf.__path__, prefix="spacy_bert_crf."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


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


REGISTRY_ENTRY_POINTS = sorted(group for group in entry_points() if group != "spacy_factories")


@pytest.mark.parametrize("group", REGISTRY_ENTRY_POINTS)
def test_entry_points_match_decorators(group):
    import_every_module()
    declared = entry_points()[group]
    names = registry_of(group).get_all()
    registered = {n for n in names if n.startswith("spacy-bert-crf.")}
    assert set(declared) == registered
    for name, target in declared.items():
        assert registry_of(group).get(name) is load_target(target)
        assert name.rsplit(".", 1)[-1].startswith("v")


def test_every_registered_name_has_an_entry_point():
    """No decorator in any registry without its entry point: the package __init__ imports none
    of the modules, so a name without one would be unknown to a config."""
    import_every_module()
    declared = {name for group in REGISTRY_ENTRY_POINTS for name in entry_points()[group]}
    registered = set()
    for name in dir(registry):
        reg = getattr(registry, name)
        if hasattr(reg, "get_all") and not name.startswith("_"):
            registered.update(n for n in reg.get_all() if str(n).startswith("spacy-bert-crf."))
    assert registered == declared


def test_names_resolve_through_entry_points_alone():
    """A fresh process that never imports the package resolves every declared name (and the
    factory), and importing the package alone does not import torch."""
    script = (
        "import sys, spacy_bert_crf\n"
        "assert 'torch' not in sys.modules, 'import spacy_bert_crf imported torch'\n"
        "import spacy\n"
        "from spacy.util import registry\n"
        "for group, name in [tuple(a.split('=', 1)) for a in sys.argv[1:]]:\n"
        "    prefix = 'spacy_' if group.startswith('spacy_') else 'thinc_'\n"
        "    getattr(registry, group[len(prefix):]).get(name)\n"
        "spacy.blank('en').add_pipe('crf_ner')\n"
        "print('ok')\n"
    )
    pairs = [f"{g}={n}" for g in REGISTRY_ENTRY_POINTS for n in entry_points()[g]]
    result = subprocess.run([sys.executable, "-c", script, *pairs], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_factories_match():
    declared = entry_points()["spacy_factories"]
    assert set(declared) == {"crf_ner"}
    meta = spacy.Language.get_factory_meta("crf_ner")
    assert meta.factory == "crf_ner"
    assert registry.factories.get("crf_ner") is load_target(declared["crf_ner"])
    assert "doc.ents" in meta.assigns
