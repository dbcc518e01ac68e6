"""Test data written by hand for this project, and a tiny random BERT."""
import os
import string
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import spacy
from spacy.language import Language
from spacy.training import Example

from spacy_bert_crf.tag_schemes import OUT, read_tags, split_tag, spans_to_tags

# Hand-written sentences with character-offset entities.
TRAIN_DATA: List[Tuple[str, List[Tuple[int, int, str]]]] = [
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


def make_examples(nlp: Language, data=TRAIN_DATA) -> List[Example]:
    examples = []
    for text, ents in data:
        doc = nlp.make_doc(text)
        examples.append(Example.from_dict(doc, {"entities": ents}))
    return examples


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
