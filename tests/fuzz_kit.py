"""Seeded mutations for fuzz tests of parsers (imported by bare name: ``tests`` is on pytest's
pythonpath). ``mutate(data, rng, tokens)``: ``data`` after one to ``most`` random edits — a byte
flipped, a run of up to 20 bytes deleted, or one of ``tokens`` (the characters and fragments the
grammar hinges on) inserted."""
import random


def mutate(data: bytes, rng: random.Random, tokens: tuple[bytes, ...], most: int = 6) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, most)):
        at = rng.randrange(len(data) + 1)
        choice = rng.random()
        if choice < 0.4 and at < len(data):
            data[at] = rng.randrange(256)
        elif choice < 0.7:
            del data[at:at + rng.randint(1, 20)]
        else:
            data[at:at] = rng.choice(tokens)
    return bytes(data)
