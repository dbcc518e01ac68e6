"""Random train/dev split of Docs."""
import random
from typing import List, Sequence, Tuple

from spacy.tokens import Doc


def split_docs(
    docs: Sequence[Doc], *, dev_size: float = 0.1, seed: int = 0
) -> Tuple[List[Doc], List[Doc]]:
    """Split docs into train and dev at random (deterministic for a seed).

    The docs are shuffled with random.Random(seed); the first dev_size go to dev. Each part keeps
    the original order of its docs.

    docs (Sequence[Doc]): The docs.
    dev_size (float): A fraction in (0, 1) of the docs (at least one), or an absolute count >= 1.
    seed (int): The random seed.
    RETURNS (Tuple[List[Doc], List[Doc]]): The train and dev docs.
    """
    n_docs = len(docs)
    if dev_size <= 0:
        raise ValueError(f"dev_size must be > 0, got {dev_size}.")
    if dev_size < 1:
        n_dev = max(1, round(dev_size * n_docs))
    elif float(dev_size).is_integer():
        n_dev = int(dev_size)
    else:
        raise ValueError(f"dev_size must be a fraction below 1 or a whole count, got {dev_size}.")
    if n_dev >= n_docs:
        raise ValueError(f"Cannot take {n_dev} dev docs out of {n_docs}: train would be empty.")
    order = list(range(n_docs))
    random.Random(seed).shuffle(order)
    dev_ids = set(order[:n_dev])
    train = [doc for i, doc in enumerate(docs) if i not in dev_ids]
    dev = [doc for i, doc in enumerate(docs) if i in dev_ids]
    return train, dev
