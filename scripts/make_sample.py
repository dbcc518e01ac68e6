"""Write the project's own small English NER sample in CoNLL format (assets/sample/).

The sentences come from templates and name lists written for this project (nothing is taken
from CoNLL-2003 or any other corpus). Deterministic: the same files every time.

    python scripts/make_sample.py assets/sample
"""
import random
import sys
from pathlib import Path

PER = ["Maria Lopez", "Kenji Sato", "Olga Petrova", "Tom Baker", "Amara Okafor", "Lars Nilsson",
       "Priya Raman", "Diego Alvarez", "Chen Wei", "Fatima Haddad", "Jonas Weber", "Ines Moreau",
       "Samuel Mensah", "Hana Kobayashi", "Lucas Ferreira", "Nadia Karim", "Ravi", "Elena"]
LOC = ["Lisbon", "Nairobi", "Oslo", "Quito", "Lima", "Osaka", "Tallinn", "Dakar", "Hanoi",
       "Porto Alegre", "Cape Town", "New Delhi", "Valparaiso", "Brno", "Kraków", "Perth"]
ORG = ["Acme Corporation", "Globex", "Initech", "Northwind Bank", "Blue Harbor Shipping",
       "the Riverside Council", "Stellar Foods", "Orbital Labs", "United Textile Workers",
       "Kestrel Airlines", "Harbor City FC", "Vantage Media"]
MISC = ["Olympic", "Nobel", "Portuguese", "Japanese", "Kenyan", "World Cup", "Euro", "Ramadan",
        "Christmas", "Norwegian", "Peruvian", "Marathon"]
TEMPLATES = [
    "{PER} flew to {LOC} on Monday .",
    "{ORG} opened an office in {LOC} .",
    "{PER} met {PER} in {LOC} last week .",
    "{ORG} hired {PER} as chief engineer .",
    "Shares of {ORG} rose 3 percent in {LOC} trading .",
    "{PER} , a {MISC} citizen , won the {MISC} prize .",
    "The {MISC} team beat {ORG} 2-1 in {LOC} .",
    "{PER} said {ORG} would cut 200 jobs .",
    "Rain fell over {LOC} and {LOC} on Sunday .",
    "{ORG} and {ORG} agreed to merge , {PER} told reporters .",
    "Police in {LOC} arrested two men on Friday .",
    "{PER} will lead the {MISC} delegation to {LOC} .",
    "Nothing unusual happened at the market today .",
    "Prices climbed for the third month in a row .",
    "{ORG} reported a loss of 12 million dollars .",
    "{PER} scored twice as {ORG} won in {LOC} .",
]


def names(kind: str, split: str):
    """Train sees the first two thirds of each list; dev and test also see the rest (unseen)."""
    pool = {"PER": PER, "LOC": LOC, "ORG": ORG, "MISC": MISC}[kind]
    return pool[: 2 * len(pool) // 3] if split == "train" else pool


def sentence(rng: random.Random, template: str, split: str):
    tokens = []
    for part in template.split():
        kind = part.strip("{}") if part.startswith("{") else None
        if kind in ("PER", "LOC", "ORG", "MISC"):
            name = rng.choice(names(kind, split)).split()
            if kind == "ORG" and name[0] == "the":
                tokens.append(("the", "O"))
                name = name[1:]
            tokens += [(w, f"{'B' if i == 0 else 'I'}-{kind}") for i, w in enumerate(name)]
        else:
            tokens.append((part, "O"))
    return tokens


def write(path: Path, rng: random.Random, n_docs: int, sents_per_doc: int) -> None:
    split = path.stem
    lines = []
    for _ in range(n_docs):
        lines += ["-DOCSTART- -X- -X- O", ""]
        for _ in range(sents_per_doc):
            lines += [f"{w} {t}" for w, t in sentence(rng, rng.choice(TEMPLATES), split)] + [""]
    path.write_text("\n".join(lines), encoding="utf8")


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2026)
    write(out / "train.txt", rng, n_docs=24, sents_per_doc=8)
    write(out / "dev.txt", rng, n_docs=5, sents_per_doc=8)
    write(out / "test.txt", rng, n_docs=5, sents_per_doc=8)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "assets/sample")
