"""Test data written by hand for this project, a tiny random BERT, and the corpora, configs and
setup that the training tests share."""
import os
import string
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import spacy
from spacy.language import Language
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, set_dot_to_object
from thinc.api import Config

from spacy_bert_crf.tag_schemes import OUT, read_tags, split_tag, spans_to_tags

Entities = List[Tuple[int, int, str]]

# Hand-written sentences with character-offset entities.
TRAIN_DATA: List[Tuple[str, Entities]] = [
    ("Maria Lopez flew to Lisbon on Monday.", [(0, 11, "PER"), (20, 26, "LOC")]),
    ("The Acme Corporation opened an office in Nairobi.", [(4, 20, "ORG"), (41, 48, "LOC")]),
    ("Kenji met Olga in Oslo.", [(0, 5, "PER"), (10, 14, "PER"), (18, 22, "LOC")]),
    ("Nothing happened here at all.", []),
    ("Globex hired Tom Baker last year.", [(0, 6, "ORG"), (13, 22, "PER")]),
    ("Rain fell over Quito and Lima.", [(15, 20, "LOC"), (25, 29, "LOC")]),
]

TRAIN_BLOCK = "\n".join(t for t, _ in TRAIN_DATA)

# ../shared/data beside the checkout (CI has it; a user's machine usually does not).
DATA_DIR = Path(
    os.environ.get("SPACY_BERT_CRF_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


# Hand-written, in the CoNLL-2003 layout (WORD POS CHUNK NER; chunks and entities in IOB1).
CONLL_SAMPLE = """-DOCSTART- -X- -X- O

Maria NNP I-NP I-PER
Lopez NNP I-NP I-PER
flew VBD I-VP O
to TO I-PP O
Lisbon NNP I-NP I-LOC
. . O O

Kenji NNP I-NP I-PER
met VBD I-VP O
Olga NNP I-NP I-PER
in IN I-PP O
Oslo NNP I-NP I-LOC
. . O O

-DOCSTART- -X- -X- O

Globex NNP I-NP I-ORG
hired VBD I-VP O
Tom NNP I-NP I-PER
Baker NNP B-NP I-PER
. . O O
"""

# The shipped configs (configs/*.cfg) and the one the others are variants of.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
BASE_CONFIG = CONFIGS_DIR / "en_conll03.cfg"
# The recipe before 2026-12-03 (crf_ner's loss a mean over tokens): the ablation configs of
# configs/ablations/ are variants of it.
MEAN_LOSS_CONFIG = CONFIGS_DIR / "ablations" / "en_conll03_mean_loss.cfg"


def make_examples(
    nlp: Language, data: Optional[Sequence[Tuple[str, Entities]]] = None
) -> List[Example]:
    """One Example per (text, entities) of `data` (TRAIN_DATA by default)."""
    examples = []
    for text, ents in TRAIN_DATA if data is None else data:
        doc = nlp.make_doc(text)
        examples.append(Example.from_dict(doc, {"entities": ents}))
    return examples


def pipeline_weights(nlp: Language) -> Dict[str, Any]:
    """Every parameter of the pipeline (thinc and torch) as numpy copies, by stable names."""
    import numpy

    out = {}
    for name, proc in nlp.pipeline:
        for i, node in enumerate(proc.model.walk()):
            for param in node.param_names:
                if node.has_param(param):
                    out[f"{name}/{i}/{param}"] = numpy.array(node.get_param(param))
            for j, shim in enumerate(node.shims):
                for key, tensor in shim._model.state_dict().items():
                    out[f"{name}/{i}.{j}/{key}"] = tensor.detach().cpu().numpy().copy()
    return out


def entities(doc) -> List[Tuple[int, int, str]]:
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def write_tiny_bert(path: Path, *, seed: int = 0) -> Path:
    """Write a random 2-layer BERT with a vocab covering the test data (and every letter)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = set()
    for text, _ in TRAIN_DATA:
        for w in text.lower().replace(".", " . ").split():
            words.add(w)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    vocab += [c for c in chars if c not in words] + [f"##{c}" for c in chars]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf8")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    return path


def transformer_config(model_dir: Path, window: int = 24, stride: int = 16) -> dict:
    return {
        "model": {
            "@architectures": "spacy-transformers.TransformerModel.v3",
            "name": str(model_dir),
            "tokenizer_config": {"use_fast": True},
            "get_spans": {
                "@span_getters": "spacy-transformers.strided_spans.v1",
                "window": window,
                "stride": stride,
            },
        }
    }


def make_trf_nlp(model_dir: Path, crf_model: Optional[dict] = None, lang: str = "en") -> Language:
    nlp = spacy.blank(lang)
    nlp.add_pipe("transformer", config=transformer_config(model_dir))
    nlp.add_pipe("crf_ner", config={"model": crf_model} if crf_model else {})
    return nlp


HASH_TOK2VEC = {
    "@architectures": "spacy.Tok2Vec.v2",
    "embed": {
        "@architectures": "spacy.MultiHashEmbed.v2",
        "width": 32,
        "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
        "rows": [500, 100, 100, 100],
        "include_static_vectors": False,
    },
    "encode": {
        "@architectures": "spacy.MaxoutWindowEncoder.v2",
        "width": 32,
        "depth": 1,
        "window_size": 1,
        "maxout_pieces": 2,
    },
}


def make_light_nlp(**model) -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": {"tok2vec": HASH_TOK2VEC, **model}})
    return nlp


def initialized(nlp: Language) -> Tuple[Language, List[Example]]:
    """`nlp` initialized on the examples of TRAIN_DATA, and those examples."""
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    return nlp, examples


def write_corpus(path: Path, data: Optional[Sequence[Tuple[str, Entities]]] = None) -> Path:
    """Save the gold docs of `data` (TRAIN_DATA by default) as a .spacy corpus at `path`."""
    examples = make_examples(spacy.blank("en"), data)
    DocBin(docs=[eg.reference for eg in examples]).to_disk(path)
    return Path(path)


def write_train_dev(root: Path, tiny_bert_dir: Path) -> Dict[str, str]:
    """Write train.spacy (TRAIN_DATA) and dev.spacy (its first three sentences) into `root`, and
    return the [paths] overrides that point a `training_config` at them and at the tiny BERT."""
    return {
        "paths.train": str(write_corpus(root / "train.spacy")),
        "paths.dev": str(write_corpus(root / "dev.spacy", TRAIN_DATA[:3])),
        "paths.transformer": str(tiny_bert_dir),
    }


# The pipeline and loop of a short `spacy train` run on the tiny BERT (`paths.transformer`);
# `training_config` sets the budget and the settings each test adds.
TRAINING_CONFIG = """
[paths]
train = null
dev = null
transformer = null

[system]
seed = 0
gpu_allocator = null

[nlp]
lang = "en"
pipeline = ["transformer","crf_ner"]

[components]

[components.transformer]
factory = "transformer"

[components.transformer.model]
@architectures = "spacy-bert-crf.TransformerModel.v1"
name = ${paths.transformer}
tokenizer_config = {"use_fast": true}

[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 24
stride = 16

[components.crf_ner]
factory = "crf_ner"

[components.crf_ner.model]
@architectures = "spacy-bert-crf.CRFTagger.v1"

[components.crf_ner.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
pooling = {"@layers":"reduce_mean.v1"}

[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${paths.train}

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${paths.dev}

[training]
seed = ${system.seed}
gpu_allocator = ${system.gpu_allocator}
max_epochs = 0

[training.batcher]
@batchers = "spacy.batch_by_words.v1"
tolerance = 0.2

[training.optimizer]
@optimizers = "Adam.v1"
learn_rate = 0.001

[training.logger]
@loggers = "spacy.ConsoleLogger.v1"
progress_bar = false
"""


def training_config(
    *,
    max_steps: int,
    eval_frequency: int,
    batch_size: int,
    settings: Optional[Dict[str, Any]] = None,
) -> str:
    """The text of TRAINING_CONFIG with its budget (steps, evaluation every `eval_frequency`
    steps, batches of `batch_size` words) and `settings`: dotted names in sections it has, each
    set to a value or a whole block (a dict), replacing what the config has there."""
    config = Config().from_str(TRAINING_CONFIG, interpolate=False)
    updates = {
        "training.max_steps": max_steps,
        "training.eval_frequency": eval_frequency,
        "training.batcher.size": batch_size,
        **(settings or {}),
    }
    for name, value in updates.items():
        set_dot_to_object(config, name, value)
    return config.to_str(interpolate=False)


def short_training_overrides(
    tiny_bert_dir: Path, corpus: Path, *, max_steps: int = 4, eval_frequency: int = 2
) -> Dict[str, Any]:
    """`spacy train` overrides that run a shipped config for a few steps on the tiny BERT,
    training and evaluating on `corpus`."""
    return {
        "paths.transformer": str(tiny_bert_dir),
        "paths.train": str(corpus),
        "paths.dev": str(corpus),
        "training.max_steps": max_steps,
        "training.eval_frequency": eval_frequency,
        "training.optimizer.learn_rate.warmup_steps": 1,
        "training.logger.progress_bar": False,
    }


def flat_config(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A nested config as {dotted name: value}; an empty section is a value ({})."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(path: Path, base: Path = BASE_CONFIG) -> Set[str]:
    """The dotted names that the config at `path` sets differently from `base` (both read
    without interpolation)."""
    ours = flat_config(load_config(base, interpolate=False))
    other = flat_config(load_config(path, interpolate=False))
    return {k for k in set(ours) | set(other) if ours.get(k) != other.get(k)}


def save_light_pipeline(
    root: Path, gold_data: Sequence[Tuple[str, Entities]], *, steps: int, lr: float
) -> Tuple[Language, Path, Path]:
    """Train `make_light_nlp()` (seed 0) on TRAIN_DATA and save it as root/"model", with
    `gold_data` as the corpus root/"gold.spacy". Returns (nlp, model dir, gold corpus)."""
    fix_random_seed(0)
    nlp = make_light_nlp()
    train(nlp, make_examples(nlp), steps=steps, lr=lr)
    nlp.to_disk(root / "model")
    return nlp, root / "model", write_corpus(root / "gold.spacy", gold_data)


def train(nlp: Language, examples, steps: int, lr: float = 0.001):
    from thinc.api import Adam

    nlp.initialize(lambda: examples)
    optimizer = Adam(lr)
    losses = {}
    for _ in range(steps):
        losses = nlp.update(examples, sgd=optimizer, losses={})
    return losses


def is_valid(tags: Sequence[str], scheme: str) -> bool:
    """Whether a tag sequence is a path the model can decode, by reading it: only the model
    scheme's prefixes, and no repair (the tests compare this with the CRF's constraints)."""
    allowed = {"BILUO": "BILU", "BIO": "BI"}[scheme]
    parsed = [split_tag(tag) for tag in tags]
    if any(prefix != OUT and prefix not in allowed for prefix, _ in parsed):
        return False
    return not read_tags(parsed, scheme)[1]


def spans_to_tag_ids(
    length: int, spans: Iterable[Tuple[int, int, str]], tags: Sequence[str], scheme: str
) -> List[int]:
    """Tag ids (positions in the inventory `tags`) for a sequence with the given entities."""
    index = {tag: i for i, tag in enumerate(tags)}
    return [index[tag] for tag in spans_to_tags(length, spans, scheme)]
