"""The bare encoder: tokenize the words and run the transformer's forward pass, nothing else.

    python -m benchmarks.peers.raw_encoder infer --data DATA --model ENCODER_DIR --out DIR

The physical limit for any head on this encoder: fast tokenizer (is_split_into_words=True,
truncation at the encoder's maximum), padding to the longest in the batch, `AutoModel` forward
under torch.inference_mode(), outputs discarded. Same test texts, order and batch sizes as the
systems; then once more at the largest batch size with the texts sorted by length (batches of
similar length: the least padding, the true limit for any batching).
"""
from .common import int_list, read_split, run_steps, set_threads, time_passes, write_json


def infer(args) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    threads = set_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model), use_fast=True)
    model = AutoModel.from_pretrained(str(args.model)).eval()
    test = read_split(args.data, "test")

    def predict(rows, bs):
        n = 0
        with torch.inference_mode():
            for b in range(0, len(rows), bs):
                batch = tokenizer([r["words"] for r in rows[b:b + bs]], is_split_into_words=True,
                                  truncation=True, padding=True, return_tensors="pt")
                model(**batch)
                n += 1
        return [None] * len(rows)

    n_words = lambda rows: sum(len(r["words"]) for r in rows)  # noqa: E731
    speed, _ = time_passes(test, predict, int_list(args.batch_sizes), n_words, limit_b1=args.limit_b1)
    # the same texts sorted by length: batches of similar length, the least padding any batching
    # of this encoder can get (the systems are timed in corpus order, like this table's b64)
    by_length = sorted(test, key=lambda r: len(r["words"]))
    largest = max(int_list(args.batch_sizes))
    sorted_speed, _ = time_passes(by_length, predict, [largest], n_words)
    write_json(args.out / "infer.json", {"speed": speed, "threads": threads,
                                         "speed_sorted_by_length": sorted_speed})


def main() -> None:
    run_steps(__doc__.split("\n")[0], {"infer": infer}, "raw: inference only")


if __name__ == "__main__":
    main()
