"""Checks that an exported pipeline computes what the torch one does: hidden states compared
wordpiece by wordpiece, and entity agreement between two runs of the same texts."""
from dataclasses import dataclass
from typing import List, Sequence, Set, Tuple

import numpy
from spacy.tokens import Doc

# Built-in sample texts (written for this project) by language; others use English.
SAMPLE_TEXTS = {
    "en": [
        "Maria Lopez flew from Lisbon to Nairobi on Monday to meet the Acme Corporation.",
        "The European Union and Japan signed a trade agreement in Brussels last year.",
        "Kenji Watanabe, a researcher at Kyoto University, presented the results in Oslo.",
        "Shares of Globex fell 3 percent on the New York Stock Exchange after the report.",
        "Nothing much happened here at all.",
        "Olga met Tom Baker and the mayor of Quito at the United Nations headquarters.",
    ],
    "zh": [
        "王小明昨天从北京飞往上海，参加了清华大学举办的会议。",
        "联合国秘书长在纽约总部会见了来自巴西的代表团。",
        "中国银行和阿里巴巴集团在杭州签署了合作协议。",
        "今天天气很好。",
        "李华在广州的中山大学学习计算机科学。",
    ],
}
LONG_DOC_REPEATS = 12  # the sample texts joined this many times: longer than one window


def sample_texts(lang: str) -> List[str]:
    """RETURNS (List[str]): Texts to verify an export on: sentences of the language, one long
    document (several windows) and an empty one."""
    texts = SAMPLE_TEXTS.get(lang, SAMPLE_TEXTS["en"])
    joiner = "" if lang in ("zh", "ja") else " "
    return list(texts) + [joiner.join(texts * LONG_DOC_REPEATS), ""]


@dataclass
class HiddenDiff:
    """The largest and mean absolute difference of two runs' hidden states, over the real
    (unpadded) wordpieces of every window."""

    max_abs_diff: float
    mean_abs_diff: float
    n_wordpieces: int


@dataclass
class Agreement:
    """Entities of a run B against a reference run A: F = 2|A and B| / (|A| + |B|) (1.0 when
    both are empty), and how many docs have exactly the same entities."""

    f: float
    n_reference: int
    n_other: int
    n_common: int
    docs_identical: int
    n_docs: int


def compare_hidden(docs_a: Sequence[Doc], docs_b: Sequence[Doc]) -> HiddenDiff:
    """Compare doc._.trf_data of two runs of the same texts.

    RAISES (ValueError): The runs cut a doc into different windows or wordpieces.
    """
    diffs: List[numpy.ndarray] = []
    for i, (a, b) in enumerate(zip(docs_a, docs_b)):
        real_a, real_b = _real_states(a), _real_states(b)
        if real_a.shape != real_b.shape:
            raise ValueError(
                f"Doc {i} ({a.text[:40]!r}) has hidden states of shape {real_a.shape} in one "
                f"run and {real_b.shape} in the other: the windows or wordpieces differ."
            )
        diffs.append(numpy.abs(real_a - real_b).ravel())
    flat = numpy.concatenate(diffs) if diffs else numpy.zeros((0,), dtype="f")
    return HiddenDiff(
        max_abs_diff=float(flat.max()) if flat.size else 0.0,
        mean_abs_diff=float(flat.mean()) if flat.size else 0.0,
        n_wordpieces=int(sum(d.size for d in diffs) // max(1, _width(docs_a))),
    )


def entity_agreement(reference: Sequence[Doc], other: Sequence[Doc]) -> Agreement:
    """RETURNS (Agreement): How far other's doc.ents agree with reference's."""
    n_ref = n_other = n_common = identical = 0
    for a, b in zip(reference, other):
        ents_a, ents_b = _ents(a), _ents(b)
        n_ref += len(ents_a)
        n_other += len(ents_b)
        n_common += len(ents_a & ents_b)
        identical += ents_a == ents_b
    total = n_ref + n_other
    return Agreement(
        f=1.0 if total == 0 else 2 * n_common / total, n_reference=n_ref, n_other=n_other,
        n_common=n_common, docs_identical=identical, n_docs=len(reference),
    )


def _ents(doc: Doc) -> Set[Tuple[int, int, str]]:
    return {(e.start, e.end, e.label_) for e in doc.ents}


def _real_states(doc: Doc) -> numpy.ndarray:
    data = doc._.trf_data
    if data is None or "last_hidden_state" not in data.model_output:
        return numpy.zeros((0, 0), dtype="f")
    hidden = data.model_output.last_hidden_state
    hidden = numpy.asarray(hidden.detach().cpu().numpy() if hasattr(hidden, "detach") else hidden)
    mask = numpy.asarray(data.wordpieces.attention_mask).astype(bool)
    if hidden.size == 0 or mask.size == 0:
        return numpy.zeros((0, hidden.shape[-1] if hidden.ndim else 0), dtype="f")
    length = min(hidden.shape[1], mask.shape[1])
    return hidden[:, :length][mask[:, :length]]


def _width(docs: Sequence[Doc]) -> int:
    for doc in docs:
        data = doc._.trf_data
        if data is not None and "last_hidden_state" in data.model_output:
            return int(data.model_output.last_hidden_state.shape[-1])
    return 1
