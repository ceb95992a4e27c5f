"""Prompts: a fixed prefix, masked spans inside a text (infilling), or nothing (unconditional).

Syntax: `[MASK]` in the text is one token to fill, `[MASK]*N` is N tokens:

    "The future of AI is"                 continue the prefix (--length tokens)
    "The [MASK]*5 sat on the mat."        fill 5 tokens between the two pieces of text
    ""                                    unconditional: fill the whole context

A text without placeholders is a prefix: `length` masked tokens follow it (default: the rest of
one context). With placeholders the layout is the text itself (plus `length` tokens after it
when given). Each piece of text is tokenized on its own, so spaces next to a placeholder belong
to the text you wrote ("The [MASK]" keeps the space before the fill).

The output text is made by construction from the pieces of text exactly as given, with the
decoded fills put in place, so a continuation always begins with the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atat_cli.errors import AtatError

# The longest layout one sample may have, in contexts: semi-autoregressive generation makes one
# block after another, so a runaway [MASK]*100000 would otherwise run for hours.
MAX_CONTEXTS = 64

# `*` with whatever sign and digits follow, so that a malformed count ([MASK]*-3, [MASK]*) is an
# error instead of one mask followed by the literal text
PLACEHOLDER = re.compile(r"\[MASK\](\*[-+]?\d*)?")


@dataclass
class Piece:
    text: str | None  # literal text (None for a span to fill)
    ids: list[int]  # its tokens, or mask ids for a span to fill
    start: int  # position in the layout


@dataclass
class Layout:
    pieces: list[Piece]
    ids: list[int]  # the whole row: prompt tokens and mask ids
    mask_id: int
    eos_id: int
    infill: bool  # the text had [MASK] placeholders

    @property
    def first_mask(self) -> int:
        return next(p.start for p in self.pieces if p.text is None)

    @property
    def prefix_text(self) -> str:
        """The literal text before the first span to fill (the prompt of a continuation)."""
        return "".join(p.text for p in self.pieces[: self._first_span_index()])

    def _first_span_index(self) -> int:
        return next(i for i, p in enumerate(self.pieces) if p.text is None)

    def render(self, row: list[int], tokenizer) -> str:
        """The full text of a generated row: literal pieces verbatim, fills decoded."""
        return "".join(p.text if p.text is not None else tokenizer.decode(row[p.start : p.start + len(p.ids)])
                       for p in self.pieces)

    def continuation(self, row: list[int], tokenizer) -> tuple[str, list[int]]:
        """Everything after the prompt prefix, cut before the first generated EOS: the text a
        judge scores, and the generated ids in it (for the unigram entropy)."""
        text, ids = [], []
        for p in self.pieces[self._first_span_index():]:
            if p.text is not None:
                text.append(p.text)
                continue
            fill = row[p.start : p.start + len(p.ids)]
            if self.eos_id in fill:
                fill = fill[: fill.index(self.eos_id)]
                text.append(tokenizer.decode(fill))
                ids += fill
                break
            text.append(tokenizer.decode(fill))
            ids += fill
        return "".join(text), ids


def build_layout(prompt: str, tokenizer, mask_id: int, seq_len: int, length: int | None = None) -> Layout:
    """Parse a prompt into a token layout. `length`: tokens to generate after the text (default:
    the rest of one context for a prefix prompt, none for an infilling text)."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the command line arrive as surrogates
        raise AtatError("the prompt is not valid UTF-8 text", "pass the prompt as UTF-8") from None
    if length is not None and length < 0:
        raise AtatError(f"length must be at least 0 (got {length})")
    pieces, ids = [], []

    def add_text(text: str):
        if text:
            tokens = tokenizer.encode(text)
            pieces.append(Piece(text, tokens, len(ids)))
            ids.extend(tokens)

    def add_span(n: int):
        if len(ids) + n > MAX_CONTEXTS * seq_len:
            raise AtatError(f"the layout would be {len(ids) + n:,} tokens, more than {MAX_CONTEXTS} contexts of "
                            f"{seq_len} (one sample is generated block by block, and this would run for very long)",
                            f"ask for at most {MAX_CONTEXTS * seq_len:,} tokens per sample")
        pieces.append(Piece(None, [mask_id] * n, len(ids)))
        ids.extend([mask_id] * n)

    pos = 0
    for match in PLACEHOLDER.finditer(prompt):
        add_text(prompt[pos : match.start()])
        count = match.group(1)
        if count is not None and not count[1:].isdigit():
            raise AtatError(f"'{match.group(0)}' has a malformed count",
                            "use [MASK] for one token or [MASK]*N for N >= 1 tokens")
        n = int(count[1:]) if count is not None else 1
        if n < 1:
            raise AtatError(f"'{match.group(0)}' asks for no tokens", "use [MASK] for one token or [MASK]*N for N >= 1")
        add_span(n)
        pos = match.end()
    add_text(prompt[pos:])
    has_spans = any(p.text is None for p in pieces)
    prefix_tokens = len(ids) if not has_spans else next(p.start for p in pieces if p.text is None)
    if prefix_tokens >= seq_len:
        raise AtatError(f"the prompt is {prefix_tokens} tokens, longer than the model's context of {seq_len} "
                        "(at least one generated token must fit after it)",
                        f"shorten the prompt to fewer than {seq_len} tokens")
    if length is None:
        length = 0 if has_spans else seq_len - len(ids)
    if length == 0 and not has_spans:
        raise AtatError("nothing to generate: length is 0 and the prompt has no [MASK] placeholder",
                        "pass --length N, or put [MASK]*N where text should be filled in")
    if length:
        add_span(length)
    return Layout(pieces, ids, mask_id, tokenizer.eos_id, has_spans)
