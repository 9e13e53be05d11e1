#!/usr/bin/env python3
"""Writes N hostile input lines for `rosetta translate` (used by scripts/hostile.sh), deterministically.

    python3 scripts/hostile_lines.py N MAX_CHARS SEED OUT

Every line ends with b"\\n", so OUT has exactly N lines as `wc -l` counts them. The mix, about one
line in twelve of each: empty lines; whitespace-only lines; lines of exactly MAX_CHARS characters,
spaced and unbroken; control characters between words (NUL, ESC, DEL, vertical tab, form feed, a
lone CR, NEL, U+2028/U+2029); invalid UTF-8 (stray continuation bytes, truncated sequences, overlong
encodings, encoded surrogates, code points above U+10FFFF, 0xFE/0xFF); right-to-left text with
bidirectional controls; combining-mark pile-ups; emoji, flags, CJK and astral characters; CRLF
endings; NUL runs; ordinary lines. Lengths other than the maximum are uniform in 1..MAX_CHARS.

Prints a summary line, then the number of lines that are not valid UTF-8 on a line of its own.
"""

import random
import sys

SYMBOLS = "abcdefghijkl"
TEXTS = ["مرحبا بالعالم هذا نص عربي", "שלום עולם זה טקסט בעברית"]
BIDI = ["\u202e", "\u202d", "\u202b", "\u202a", "\u202c", "\u200f", "\u200e", "\u2067", "\u2069"]
CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x0b", "\x0c", "\r", "\x85", "\u2028", "\u2029", "\t"]
WIDE = ["😀", "👩‍👩‍👧", "🇫🇷", "東京", "𝔘𝔫𝔦", "\U0010fffd", "\ufeff", "\ufffd"]
INVALID = [
    b"\x80",  # stray continuation byte
    b"\xbf\xbf",
    b"\xc3",  # truncated two-byte sequence
    b"\xe6\x9d",  # truncated three-byte sequence
    b"\xf0\x9f\x98",  # truncated four-byte sequence
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xfe",
    b"\xff",
]


def word(rng):
    return "".join(rng.choices(SYMBOLS, k=rng.randint(1, 3)))


def block(rng, chars, piece):
    """About `chars` characters of `piece(rng)` joined by spaces."""
    out, n = [], 0
    while n < chars:
        p = piece(rng)
        out.append(p)
        n += len(p) + 1
    return " ".join(out)


class Pools:
    """Long random blocks of each kind; a line is a slice of one (fast even at 10,000 characters)."""

    def __init__(self, rng, max_chars, k=16):
        size = 2 * max_chars + 100
        self.spaced = [block(rng, size, word) for _ in range(k)]
        self.unbroken = ["".join(rng.choices(SYMBOLS, k=size)) for _ in range(k)]
        self.controls = [block(rng, size, lambda r: word(r) + r.choice(CONTROLS)) for _ in range(k)]
        self.rtl = [
            block(rng, size, lambda r: r.choice(BIDI) + r.choice(TEXTS + [word(r)]) + r.choice(BIDI))
            for _ in range(k)
        ]
        self.combining = [
            "".join(r + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(0, 30)))
                    for r in rng.choices(SYMBOLS, k=size // 16 + 1))
            for _ in range(k)
        ]
        self.wide = [block(rng, size, lambda r: r.choice(WIDE)) for _ in range(k)]
        self.invalid = []
        for _ in range(k):
            out = bytearray()
            while len(out) < 2 * size:
                out += word(rng).encode() + rng.choice(INVALID) + b" "
            self.invalid.append(bytes(out))

    @staticmethod
    def cut(rng, pool, n):
        text = rng.choice(pool)
        start = rng.randrange(len(text) - n) if len(text) > n else 0
        return text[start:start + n]


def line(rng, pools, max_chars):
    """One hostile line as bytes, without its newline."""
    kind = rng.randrange(12)
    n = rng.randint(1, max_chars)
    if kind == 0:
        return b""
    if kind == 1:
        return "".join(rng.choices([" ", "\t", "\x0b", "\x0c", "\u3000", "\xa0"], k=rng.randint(1, 20))).encode()
    if kind == 2:
        return pools.cut(rng, pools.spaced, max_chars).encode()
    if kind == 3:
        return pools.cut(rng, pools.unbroken, max_chars).encode()
    if kind == 4:
        return pools.cut(rng, pools.controls, n).encode()
    if kind == 5:
        return pools.cut(rng, pools.invalid, n) + rng.choice(INVALID)
    if kind == 6:
        return pools.cut(rng, pools.rtl, n).encode()
    if kind == 7:
        return pools.cut(rng, pools.combining, n).encode()
    if kind == 8:
        return pools.cut(rng, pools.wide, n).encode()
    if kind == 9:
        return pools.cut(rng, pools.spaced, min(n, 80)).encode() + b"\r"
    if kind == 10:
        return b"\x00" * rng.randint(1, 50) + word(rng).encode()
    return pools.cut(rng, pools.spaced, min(n, 60)).encode()


def main():
    count, max_chars, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    pools = Pools(rng, max_chars)
    invalid = longest = 0
    with open(out, "wb") as f:
        for _ in range(count):
            data = line(rng, pools, max_chars)
            assert b"\n" not in data
            try:
                longest = max(longest, len(data.decode("utf-8")))
            except UnicodeDecodeError:
                invalid += 1
            f.write(data + b"\n")
    print(f"{count} lines, longest {longest} characters, {invalid} not valid UTF-8")
    print(invalid)


if __name__ == "__main__":
    main()
