"""Hugging Face `AutoModelForTokenClassification` (softmax over IOB2 tags), the `run_ner` recipe.

    python -m benchmarks.peers.hf_tagger train --data DATA --encoder DIR --out DIR [--epochs 2]
    python -m benchmarks.peers.hf_tagger infer --data DATA --model DIR --out DIR [--threads 2]

Training follows transformers' examples/pytorch/token-classification/run_ner.py defaults: the
label on the first sub-word of each word (the others -100, label_all_tokens=False), AdamW with
lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0, a linear schedule without warm-up,
gradient clipping at 1.0, batches of 32 sentences shuffled every epoch, padding to the longest
in the batch (DataCollatorForTokenClassification), truncation at the encoder's maximum length.
The loop is written out (as Trainer's, without Trainer, which needs `accelerate`). A batch whose
padded size would pass MAX_BATCH_PIECES wordpieces (long MSRA sentences: 32 x 512 pieces took
21 GB on this CPU and was killed) runs as several forward/backward passes whose gradients add up
to the batch's (each pass's mean loss weighted by its share of the batch's labelled pieces): the
same update in bounded memory. CoNLL-2003's batches fit in one pass.

Inference is `pipeline("token-classification", aggregation_strategy="first")` on the words
(`is_split_into_words=True`); its character spans are mapped back onto the words (a span that
starts or ends inside a word covers the whole word).

Text written without spaces between words (MSRA: one word a character) goes in as the text, not
as words. `is_split_into_words=True` makes a sentencepiece tokenizer (e5-small-zh) put a bare
"▁" piece before every character, and the first-sub-word label then lands on that "▁", the same
piece for every character: the model learns nothing from it (test F1 0.00 on the MSRA subsets of
2026-12-03/04). So such a sentence is tokenized as its text with offsets (the alignment of the
HF course's offset-mapping recipe): a piece takes the tag of the word its first character is in,
the first piece of a word only (others -100, as run_ner); a word inside a piece that starts in an
earlier word has no piece of its own. Inference runs the pipeline on the text with
aggregation_strategy="simple" ("first" needs word boundaries from spaces, which this text lacks).
"""
import bisect
import math
import time
from typing import Dict, List, Sequence, Tuple

from .common import (ents_to_iob2, labels_of, read_split, run_steps, set_threads,
                     time_and_write_predictions, write_json)

LR = 5e-5
BATCH_SIZE = 32
MAX_GRAD_NORM = 1.0
MAX_BATCH_PIECES = 4096  # padded wordpieces in one forward pass (32 sentences of 128)


def micro_batches(features: Sequence[dict], max_pieces: int = MAX_BATCH_PIECES) -> List[list]:
    """Split a batch (in its order) into runs whose padded size, sentences x the longest
    sentence's pieces, stays within max_pieces (one sentence at least)."""
    out: List[list] = []
    current: list = []
    longest = 0
    for feature in features:
        n = len(feature["input_ids"])
        if current and (len(current) + 1) * max(longest, n) > max_pieces:
            out.append(current)
            current, longest = [], 0
        current.append(feature)
        longest = max(longest, n)
    if current:
        out.append(current)
    return out


def labelled(features: Sequence[dict]) -> int:
    """The pieces that carry a label (not -100) in `features`: what the loss averages over."""
    return sum(sum(x != -100 for x in f["labels"]) for f in features)


def spaced(row: dict) -> bool:
    """True when every word but the last is followed by a space (CoNLL-2003): the words go to
    the tokenizer as words. False for text written without spaces (MSRA's characters)."""
    return all(row.get("spaces", [True] * len(row["words"]))[:-1])


def text_and_starts(row: dict) -> Tuple[str, List[int]]:
    """The row's text (words joined as their spaces say) and each word's first character."""
    text, starts = "", []
    spaces = row.get("spaces", [True] * len(row["words"]))
    for word, space in zip(row["words"], spaces):
        starts.append(len(text))
        text += word + (" " if space else "")
    return text, starts


def encode_row(row: dict, tokenizer, label2id: Dict[str, int]) -> dict:
    """One training feature: input ids, attention mask and one label per piece (-100 where the
    loss skips it): the first piece of each word labelled with the word's IOB2 tag."""
    tags = ents_to_iob2(len(row["words"]), row["ents"])
    labels: List[int] = []
    previous = None
    if spaced(row):
        enc = tokenizer(row["words"], is_split_into_words=True, truncation=True)
        for word in enc.word_ids():
            labels.append(-100 if word is None or word == previous else label2id[tags[word]])
            previous = word
        return {**enc, "labels": labels}
    text, starts = text_and_starts(row)
    enc = tokenizer(text, truncation=True, return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")
    for start, end in offsets:
        word = bisect.bisect_right(starts, start) - 1 if end > start else None
        labels.append(-100 if word is None or word == previous else label2id[tags[word]])
        previous = word if word is not None else previous
    return {**enc, "labels": labels}


def train(args) -> None:
    import torch
    from transformers import (AutoModelForTokenClassification, AutoTokenizer,
                              DataCollatorForTokenClassification, get_linear_schedule_with_warmup)

    threads = set_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = read_split(args.data, "train")
    tag_names = ["O"] + [f"{p}-{label}" for label in labels_of(rows) for p in "BI"]
    label2id = {t: i for i, t in enumerate(tag_names)}
    tokenizer = AutoTokenizer.from_pretrained(str(args.encoder), use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(
        str(args.encoder), num_labels=len(tag_names),
        id2label=dict(enumerate(tag_names)), label2id=label2id,
    )
    examples = [encode_row(row, tokenizer, label2id) for row in rows]
    collate = DataCollatorForTokenClassification(tokenizer)
    steps_per_epoch = math.ceil(len(examples) / BATCH_SIZE)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    step, start, losses = 0, time.time(), []
    for epoch in range(args.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for b in range(0, len(order), BATCH_SIZE):
            batch = [examples[i] for i in order[b:b + BATCH_SIZE]]
            n_labelled = labelled(batch)
            loss = 0.0
            for part in micro_batches(batch):
                share = labelled(part) / max(1, n_labelled)
                part_loss = model(**collate(part)).loss * share
                part_loss.backward()
                loss += float(part_loss.detach())
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            losses.append(loss)
            if step % 50 == 0 or step == total:
                recent = losses[-50:]
                print(f"epoch {epoch} step {step}/{total} loss {sum(recent) / len(recent):.4f} "
                      f"{time.time() - start:.0f}s", flush=True)
    model.save_pretrained(str(args.out / "model"))
    tokenizer.save_pretrained(str(args.out / "model"))
    write_json(args.out / "train_info.json", {
        "steps": step, "steps_per_epoch": steps_per_epoch, "threads": threads,
        "recipe": f"AdamW lr {LR} linear (no warm-up), batch {BATCH_SIZE} sentences, "
                  f"clip {MAX_GRAD_NORM}, first-subword labels (unspaced text: by offsets)",
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
    })


def spans_to_tokens(words: Sequence[str], entities: List[dict], delimiter: str = " ",
                    starts: Sequence[int] = ()):
    """Map the pipeline's character spans over delimiter.join(words) (or a text whose words
    begin at `starts`) onto word offsets."""
    if not starts:
        pos, positions = 0, []
        for w in words:
            positions.append(pos)
            pos += len(w) + len(delimiter)
        starts = positions
    out = []
    for ent in entities:
        first = bisect.bisect_right(starts, ent["start"]) - 1
        last = bisect.bisect_right(starts, max(ent["start"], ent["end"] - 1)) - 1
        label = ent.get("entity_group") or ent["entity"].split("-", 1)[-1]
        out.append((max(first, 0), last + 1, label))
    return out


def predictor(model):
    """RETURNS (Callable[[rows, batch_size], entities per row]): the token-classification
    pipeline over rows' words (aggregation_strategy="first"), or over the text of rows written
    without spaces (aggregation_strategy="simple")."""
    from transformers import pipeline

    ner = pipeline("token-classification", model=str(model), tokenizer=str(model),
                   aggregation_strategy="first", device=-1)

    def predict(rows, bs):
        out: List[list] = [[] for _ in rows]
        words = [i for i, r in enumerate(rows) if spaced(r)]
        if words:
            results = ner([rows[i]["words"] for i in words], batch_size=bs,
                          is_split_into_words=True)
            for i, ents in zip(words, results):
                out[i] = spans_to_tokens(rows[i]["words"], ents)
        texts = [i for i, r in enumerate(rows) if not spaced(r)]
        if texts:
            pairs = [text_and_starts(rows[i]) for i in texts]
            results = ner([text for text, _ in pairs], batch_size=bs,
                          aggregation_strategy="simple")
            for i, (_, starts), ents in zip(texts, pairs, results):
                out[i] = spans_to_tokens(rows[i]["words"], ents, starts=starts)
        return out

    return predict


def infer(args) -> None:
    threads = set_threads(args.threads)
    time_and_write_predictions(args, predictor(args.model), threads=threads,
                               aggregation_strategy="first (words); simple (unspaced text)")


def main() -> None:
    run_steps(__doc__.split("\n")[0], {"train": train, "infer": infer}, "hf: no scaling step")


if __name__ == "__main__":
    main()
