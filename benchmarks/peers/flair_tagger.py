"""Flair `SequenceTagger` on `TransformerWordEmbeddings(fine_tune=True)` with a CRF.

Runs in Flair's own virtualenv (benchmarks/.venvs/flair, made by benchmarks.run), so this module
imports nothing from spacy_bert_crf:

    .venvs/flair/bin/python -m benchmarks.peers.flair_tagger train --data DATA --encoder DIR \
        --out DIR
    .venvs/flair/bin/python -m benchmarks.peers.flair_tagger infer --data DATA --model DIR --out DIR

Recipe: Flair's transformer fine-tuning (FLERT tutorial) without document context
(use_context=False, as every other system here sees single sentences): last layer, first
sub-token pooling, no RNN, no re-projection, a CRF on top (use_crf=True, Flair's default
BIOES tag format), `ModelTrainer.fine_tune` (AdamW, lr 5e-5, linear schedule with 10% warm-up)
with batches of 32 sentences as the HF peer. The data go in as Flair's column format (word and
IOB2 tag), written from the same JSONL the other systems read. The final model is evaluated.
"""
import time
from pathlib import Path

from .common import (ents_to_iob2, read_split, run_steps, set_threads, time_and_write_predictions,
                     write_json)

LR = 5e-5
BATCH_SIZE = 32


def write_columns(rows, path: Path) -> None:
    with path.open("w", encoding="utf8") as f:
        for row in rows:
            for word, tag in zip(row["words"], ents_to_iob2(len(row["words"]), row["ents"])):
                f.write(f"{word} {tag}\n")
            f.write("\n")


def train(args) -> None:
    import flair
    import torch
    from flair.datasets import ColumnCorpus
    from flair.embeddings import TransformerWordEmbeddings
    from flair.models import SequenceTagger
    from flair.trainers import ModelTrainer

    threads = set_threads(args.threads)
    flair.set_seed(args.seed)
    flair.device = torch.device("cpu")
    columns = args.out / "columns"
    columns.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        write_columns(read_split(args.data, split), columns / f"{split}.txt")
    corpus = ColumnCorpus(columns, {0: "text", 1: "ner"}, train_file="train.txt",
                          dev_file="dev.txt", autofind_splits=False, sample_missing_splits=False,
                          in_memory=True)
    label_dict = corpus.make_label_dictionary(label_type="ner", add_unk=False)
    embeddings = TransformerWordEmbeddings(model=str(args.encoder), layers="-1",
                                           subtoken_pooling="first", fine_tune=True,
                                           use_context=False)
    tagger = SequenceTagger(hidden_size=256, embeddings=embeddings, tag_dictionary=label_dict,
                            tag_type="ner", use_crf=True, use_rnn=False,
                            reproject_embeddings=False)
    trainer = ModelTrainer(tagger, corpus)
    start = time.time()
    trainer.fine_tune(str(args.out / "model"), learning_rate=LR, mini_batch_size=BATCH_SIZE,
                      max_epochs=args.epochs, shuffle=True, save_final_model=True,
                      create_file_logs=False, create_loss_file=False)
    write_json(args.out / "train_info.json", {
        "threads": threads, "seconds": time.time() - start, "flair": flair.__version__,
        "recipe": f"fine_tune AdamW lr {LR} linear 10% warm-up, batch {BATCH_SIZE} sentences, "
                  "CRF, use_context=False",
    })


def infer(args) -> None:
    import flair
    import torch
    from flair.data import Sentence
    from flair.models import SequenceTagger

    threads = set_threads(args.threads)
    flair.device = torch.device("cpu")
    model = args.model / "final-model.pt" if args.model.is_dir() else args.model
    tagger = SequenceTagger.load(str(model))

    def predict(rows, bs):
        sentences = [Sentence(r["words"]) for r in rows]
        tagger.predict(sentences, mini_batch_size=bs)
        return [[(s.tokens[0].idx - 1, s.tokens[-1].idx, s.tag) for s in sent.get_spans("ner")]
                for sent in sentences]

    time_and_write_predictions(args, predict, threads=threads)


def main() -> None:
    run_steps(__doc__.split("\n")[0], {"train": train, "infer": infer}, "flair: no scaling step")


if __name__ == "__main__":
    main()
