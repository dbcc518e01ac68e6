"""One scorer for every system: entity-level micro P/R/F1 and per type, exact span and label.

score(gold_rows, pred_rows) compares the gold entities of data/<split>.jsonl with a system's
pred-<split>.jsonl ({"doc": i, "ents": [[start, end, label]]}). An entity counts as correct when
its start, end and label all match a gold entity of the same doc. The same numbers are
recomputed by seqeval (strict mode, IOB2) as a cross-check when seqeval is installed.
"""
from collections import Counter
from typing import Dict, List, Sequence

from .common import ents_to_iob2


def _prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f": f, "tp": tp, "n_pred": n_pred, "n_gold": n_gold}


def score(gold_rows: Sequence[dict], pred_rows: Sequence[dict]) -> dict:
    """RETURNS (dict): {"p", "r", "f", "tp", "n_pred", "n_gold", "per_type": {label: prf},
    "seqeval": {"p", "r", "f"} or {"error": ...}, "crosscheck_ok": bool or None}."""
    preds = {int(row["doc"]): row["ents"] for row in pred_rows}
    if len(preds) != len(gold_rows) or set(preds) != set(range(len(gold_rows))):
        raise ValueError(f"predictions for {len(preds)} docs, gold has {len(gold_rows)}")
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    overlaps = 0
    for i, gold in enumerate(gold_rows):
        g = {tuple(e) for e in gold["ents"]}
        p = {(int(s), int(e), str(label)) for s, e, label in preds[i]}
        covered = Counter(t for s, e, _ in p for t in range(s, e))
        overlaps += any(c > 1 for c in covered.values())
        for e in g:
            n_gold[e[2]] += 1
        for e in p:
            n_pred[e[2]] += 1
            tp[e[2]] += e in g
    result = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    result["per_type"] = {label: _prf(tp[label], n_pred[label], n_gold[label])
                          for label in sorted(set(n_gold) | set(n_pred))}
    result["docs_with_overlapping_predictions"] = overlaps
    result["seqeval"] = seqeval_scores(gold_rows, [preds[i] for i in range(len(gold_rows))])
    if "f" in result["seqeval"]:
        result["crosscheck_ok"] = all(abs(result[k] - result["seqeval"][k]) < 1e-9 for k in "prf")
    else:
        result["crosscheck_ok"] = None
    return result


def seqeval_scores(gold_rows: Sequence[dict], preds: List[Sequence]) -> Dict[str, float]:
    """Micro P/R/F of seqeval in strict IOB2 mode over the IOB2 tags of gold and predictions
    (overlapping predicted entities, which IOB2 cannot hold, make the cross-check disagree)."""
    try:
        from seqeval.metrics import f1_score, precision_score, recall_score
        from seqeval.scheme import IOB2
    except ImportError as err:
        return {"error": f"seqeval not installed ({err})"}
    y_true = [ents_to_iob2(len(g["words"]), g["ents"]) for g in gold_rows]
    y_pred = [ents_to_iob2(len(g["words"]), p) for g, p in zip(gold_rows, preds)]
    kw = {"mode": "strict", "scheme": IOB2, "average": "micro", "zero_division": 0}
    return {"p": float(precision_score(y_true, y_pred, **kw)),
            "r": float(recall_score(y_true, y_pred, **kw)),
            "f": float(f1_score(y_true, y_pred, **kw))}
