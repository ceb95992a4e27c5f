"""`atat data fetch | list | info`: prepare corpora and look at what is prepared.

Heavy modules (datasets, tokenizers, torch, numpy, atat_cli.data) are imported inside the
functions so that `atat --help` stays instant.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options
from .output import out, print_json


def fetch(
    sources: Annotated[list[str], typer.Argument(
        help="A corpus name (see `atat data list`), or text files, or one folder holding "
             "train.txt (+ valid.txt, test.txt).", show_default=False)],
    name: Annotated[Optional[str], typer.Option(
        "--name", help="Name to store local files under (required for files).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        "--tokenizer", help="bytes | bpe | gpt2 | bert-base-uncased | any hub tokenizer name "
                            "(default: the corpus' default; bpe for files).")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(
        "--vocab-size", help="Vocabulary size of a bpe tokenizer (default 8192).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Prepare again even if a finished preparation exists.")] = False,
    json_out: options.JsonOpt = False,
):
    """Fetch a corpus, tokenize it and store it ready for training (reused if already done).

    Text files are split into documents at blank lines.

    Valid/test splits are held out by document hash, unless a folder gives them.

    Example: atat data fetch pydocs --tokenizer bpe --vocab-size 8192
    """
    from ..data import CORPORA, ensure_prepared, get_corpus
    from ..errors import AtatError

    first = sources[0]
    if first in CORPORA:
        if len(sources) > 1:
            raise AtatError(f"'{first}' is a corpus name; give it alone, without files")
        if name is not None and name != first:
            raise AtatError("--name is only for local files",
                            hint=f"atat data fetch {first}")
        corpus, files = first, None
    else:
        looks_like_path = "/" in first or "." in first
        single_name = name is None and len(sources) == 1 and not looks_like_path
        if single_name and not Path(first).exists():
            get_corpus(first)  # neither a corpus nor a file: "unknown corpus" with the list
        for source in sources:
            if not Path(source).exists():
                raise AtatError(f"file not found: {source}")
        if name is None:
            raise AtatError("local files need a name to be stored under",
                            hint=f"atat data fetch {' '.join(sources)} --name mycorpus")
        corpus, files = name, sources
    data = ensure_prepared(corpus, files=files, tokenizer=tokenizer, vocab_size=vocab_size,
                           force=force, progress=not json_out)
    _show(data, json_out)


def list_corpora(json_out: options.JsonOpt = False):
    """List the known corpora and the prepared ones, with where they are stored.

    Example: atat data list --json
    """
    from ..data import CORPORA, PreparedData, prepared_corpora
    from ..errors import AtatError
    from ..paths import data_root

    root = data_root()
    prepared = set(prepared_corpora(root))
    rows = []
    for name in list(CORPORA) + sorted(prepared - set(CORPORA)):
        spec = CORPORA.get(name)
        row = {"name": name, "kind": spec.kind if spec else "local",
               "description": spec.description if spec else "",
               "default_tokenizer": spec.default_tokenizer if spec else None,
               "prepared": name in prepared, "tokenizer": None, "path": None}
        if name in prepared:
            try:
                meta = PreparedData(root / name).meta
                row["tokenizer"] = meta["tokenizer"]["name"]
                row["description"] = row["description"] or meta.get("source", "")
            except AtatError:  # a corrupt preparation is listed; `atat data info` explains it
                row["tokenizer"] = "?"
            row["path"] = str(root / name)
        rows.append(row)
    if json_out:
        print_json({"data_root": str(root), "corpora": rows})
        return

    from rich.table import Table

    table = Table(title=f"Corpora (prepared under {root})", title_justify="left")
    for column in ("name", "kind", "prepared", "default tokenizer", "description"):
        table.add_column(column)
    for row in rows:
        prepared_text = f"yes ({row['tokenizer']})" if row["prepared"] else "no"
        table.add_row(row["name"], row["kind"], prepared_text, row["default_tokenizer"] or "-",
                      row["description"])
    out.print(table)


def info(
    name: Annotated[str, typer.Argument(help="A prepared corpus.", show_default=False)],
    json_out: options.JsonOpt = False,
):
    """Show how a prepared corpus was made: tokenizer, splits, token counts, hashes, and the
    entropy floor in bits/byte where the source's is known (synthetic).

    Example: atat data info pydocs
    """
    from ..data import open_prepared

    _show(open_prepared(name), json_out)


def _show(data, json_out: bool) -> None:
    """A prepared corpus as a table (or JSON: its meta plus "path") on stdout."""
    from ..data.registry import CORPORA

    spec = CORPORA.get(data.meta["name"])
    vs_mdlm = spec.vs_mdlm if spec is not None else ""
    if json_out:
        print_json({**data.meta, "path": str(data.path)} | ({"vs_mdlm": vs_mdlm} if vs_mdlm else {}))
        return

    from rich.table import Table

    meta = data.meta
    t = meta["tokenizer"]
    table = Table(title=f"{meta['name']}: {meta.get('source', '')}", title_justify="left")
    for column in ("split", "tokens", "documents", "UTF-8 bytes", "bytes/token"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, s in meta["splits"].items():
        table.add_row(split, f"{s['tokens']:,}", f"{s['documents']:,}", f"{s['utf8_bytes']:,}",
                      f"{data.bytes_per_token(split):.2f}")
    out.print(table)
    out.print(f"tokenizer  {t['name']} (vocab {t['vocab_size']}, eos {t['eos_id']}), "
              f"stored as {meta['dtype']}", highlight=False)
    if "entropy_floor" in meta:  # a source whose entropy rate is known (synthetic)
        floor = meta["entropy_floor"]
        out.print(f"floor      {floor['bits_per_byte']:.4f} bits/byte, below which no model goes "
                  f"({floor['how']})", highlight=False)
    if vs_mdlm:
        out.print(f"vs MDLM    {vs_mdlm}", highlight=False)
    out.print(f"path       {data.path}", highlight=False)
