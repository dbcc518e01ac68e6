"""The bare encoder: tokenize the words and run the transformer's forward pass, nothing else.

    python -m benchmarks.peers.raw_encoder infer --data DATA --model ENCODER_DIR --out DIR

The physical limit for any head on this encoder: fast tokenizer (is_split_into_words=True,
truncation at the encoder's maximum), padding to the longest in the batch, `AutoModel` forward
under torch.inference_mode(), outputs discarded. Same test texts, order and batch sizes as the
systems (benchmarks.peers.speed also times it on sentences sorted by length).
"""
from .common import int_list, read_split, run_steps, set_threads, time_passes, write_json


def predictor(model_dir):
    """RETURNS (Callable[[rows, batch_size], list]): the bare forward pass over rows' words."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    model = AutoModel.from_pretrained(str(model_dir)).eval()

    def predict(rows, bs):
        with torch.inference_mode():
            for b in range(0, len(rows), bs):
                batch = tokenizer([r["words"] for r in rows[b:b + bs]], is_split_into_words=True,
                                  truncation=True, padding=True, return_tensors="pt")
                model(**batch)
        return [None] * len(rows)

    return predict


def infer(args) -> None:
    threads = set_threads(args.threads)
    predict = predictor(args.model)
    test = read_split(args.data, "test")
    speed, _ = time_passes(test, predict, int_list(args.batch_sizes),
                           lambda rows: sum(len(r["words"]) for r in rows), limit_b1=args.limit_b1)
    write_json(args.out / "infer.json", {"speed": speed, "threads": threads})


def main() -> None:
    run_steps(__doc__.split("\n")[0], {"infer": infer}, "raw: inference only")


if __name__ == "__main__":
    main()
