"""Write a copy of a Hugging Face causal-LM checkpoint whose tokenizer has the two mode prefixes as tokens.

``python -m verl_personadual.apps.add_mode_tokens BASE_DIR OUT_DIR`` (see ``--help``).

What it does, in order:

1. Loads the tokenizer and model of ``BASE_DIR`` (weights in their stored dtype).
2. For each prefix in ``modes.PREFIX_TEXT`` that is not already one token, records its plain-text encoding
   (``tokenizer.encode(prefix, add_special_tokens=False)``) and makes it a special token (never split,
   stripped when decoding with ``skip_special_tokens``), added or renamed as step 3 says. Prefixes that
   already are tokens are left alone, so re-running on an output changes nothing (idempotent).
3. Embedding rows, in order of preference:

   a. the checkpoint's spare rows (embedding rows > tokenizer size, as in Qwen3): the tokens are added after
      the last id;
   b. otherwise, unused reserved special tokens (``<|reserved_special_token_N|>``, as in Llama 3.x, whose
      128,256 rows are all taken): the first ones in id order that the chat template does not mention are
      renamed to the prefixes, so the tokenizer and the embeddings keep their size;
   c. otherwise the tokens are added and the embeddings resized to the next multiple of 64 rows
      (``RESIZE_MULTIPLE``), an even matmul size; the padding rows beyond the tokenizer are zero.
4. Initialisation: the input-embedding row of each new token is the mean of the input-embedding rows of its
   prefix text's token ids; when the output embedding (``lm_head``) is untied, its row is the mean of the
   output rows of the same ids. Tied models stay tied (one tensor), untied stay untied.
5. Saves to a temporary directory next to ``OUT_DIR``, reloads it and verifies the round trip (the prefixes
   resolve as single tokens with the expected ids, encode -> decode reproduces a text containing them, the
   new rows hold the documented values, tying is unchanged, a forward pass over the mode tokens gives finite
   logits), copies the base directory's other top-level files (README, license, ...) and renames the
   temporary directory to ``OUT_DIR``. A failure leaves no partial output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from verl_personadual.core.modes import PREFIX_TEXT, Mode, resolve_prefixes
from verl_personadual.data.preflight import PreflightError, check_model
from verl_personadual.utils.cli import Parser
from verl_personadual.utils.errors import run_cli
from verl_personadual.utils.fingerprint import checkpoint_fingerprint
from verl_personadual.utils.outputs import OVERWRITE_HELP, Build, claim_output

__all__ = [
    "RESERVED_TOKEN",
    "RESIZE_MULTIPLE",
    "ModeTokenReport",
    "add_mode_tokens",
    "prepare_checkpoint",
    "verify_checkpoint",
    "main",
]

logger = logging.getLogger(__name__)

#: Top-level files of the base directory that are weights or written by ``save_pretrained``: never copied.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".index.json")

#: Text used to check the encode -> decode round trip of the saved tokenizer.
_ROUND_TRIP_TEXT = "{g}The answer is B.{p}I am a nurse, so"

#: Reserved special tokens that may be renamed to the mode prefixes (Llama 3.x names them this way).
RESERVED_TOKEN = re.compile(r"<\|reserved_special_token_\d+\|>")

#: When the embeddings must grow, their row count is rounded up to a multiple of this.
RESIZE_MULTIPLE = 64


@dataclass(frozen=True)
class ModeTokenReport:
    """What ``add_mode_tokens`` did.

    Attributes:
        ids: token id of each prefix in the final tokenizer.
        added: the modes whose token was added now (empty when the tokenizer already had both).
        reused: for each added mode that took over a reserved special token, that token's former name.
        init_source: for each added mode, the ids of its prefix text whose embedding rows were averaged.
        rows_before / rows_after: input-embedding rows before and after (equal unless resized).
        tokenizer_size: ``len(tokenizer)`` after adding.
        tied: whether input and output embeddings are one tensor.
    """

    ids: dict[Mode, int]
    added: tuple[Mode, ...]
    init_source: dict[Mode, tuple[int, ...]]
    rows_before: int
    rows_after: int
    tokenizer_size: int
    tied: bool
    reused: dict[Mode, str] = field(default_factory=dict)

    @property
    def resized(self) -> bool:
        return self.rows_after != self.rows_before


def _is_tied(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _unused_reserved_tokens(tokenizer: Any, count: int) -> list[tuple[int, str]]:
    """The first ``count`` reserved special tokens (id order) the chat template does not mention, or ``[]``."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = "".join(template.values())
    free = sorted(
        (i, str(t))
        for i, t in tokenizer.added_tokens_decoder.items()
        if RESERVED_TOKEN.fullmatch(str(t)) and str(t) not in template
    )
    return free[:count] if len(free) >= count else []


def _rename_special_tokens(tokenizer: Any, renames: dict[str, str]) -> Any:
    """A copy of ``tokenizer`` in which each added token ``old`` of ``renames`` is called ``new`` (same id, flags).

    Hugging Face tokenizers cannot rename a token in memory, so the tokenizer is saved to a temporary directory,
    its ``tokenizer.json`` (``added_tokens``, and the model vocabulary if the token is there) and
    ``tokenizer_config.json`` (``added_tokens_decoder`` and special-token lists, when present) are edited, and it
    is loaded again. Raises ``RuntimeError`` if the result does not map each new name to the old id.
    """
    from transformers import AutoTokenizer

    before = {new: tokenizer.convert_tokens_to_ids(old) for old, new in renames.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        spec_path, config_path = Path(tmp) / "tokenizer.json", Path(tmp) / "tokenizer_config.json"
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        for entry in spec["added_tokens"]:
            entry["content"] = renames.get(entry["content"], entry["content"])
        vocab = spec.get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            for old, new in renames.items():
                if old in vocab:
                    vocab[new] = vocab.pop(old)
        spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for entry in config.get("added_tokens_decoder", {}).values():
            entry["content"] = renames.get(entry["content"], entry["content"])
        for key in ("additional_special_tokens", "extra_special_tokens"):
            if isinstance(config.get(key), list):
                config[key] = [renames.get(t, t) for t in config[key]]
        config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        renamed = AutoTokenizer.from_pretrained(tmp)
    after = {new: renamed.convert_tokens_to_ids(new) for new in renames.values()}
    if after != before or len(renamed) != len(tokenizer):
        raise RuntimeError(f"renaming {renames} gave ids {after} (expected {before}), size {len(renamed)}")
    return renamed


def add_mode_tokens(model: Any, tokenizer: Any) -> tuple[ModeTokenReport, Any]:
    """Give the missing prefixes a token each and initialise their rows in ``model`` (in place).

    Returns the report and the tokenizer to save: ``tokenizer`` itself, changed in place, except when reserved
    special tokens were renamed (step 3b of the module doc), which needs a new tokenizer object.

    Raises:
        PreflightError: the tokenizer is larger than the embedding before anything is added (mismatched pair).
    """
    rows_before = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows_before:
        raise PreflightError(
            f"tokenizer has {len(tokenizer)} tokens but the model has only {rows_before} embedding rows; "
            "the tokenizer does not belong to this checkpoint"
        )
    tied = _is_tied(model)
    vocab = tokenizer.get_vocab()
    missing = [m for m in Mode if m.prefix not in vocab]
    text_ids = {m: tuple(tokenizer.encode(m.prefix, add_special_tokens=False)) for m in missing}
    reused: dict[Mode, str] = {}
    fits = len(tokenizer) + len(missing) <= rows_before
    reserved = [] if fits or not missing else _unused_reserved_tokens(tokenizer, len(missing))
    if reserved:
        reused = {m: name for m, (_, name) in zip(missing, reserved)}
        tokenizer = _rename_special_tokens(tokenizer, {name: m.prefix for m, name in reused.items()})
    elif missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [m.prefix for m in missing]}, replace_extra_special_tokens=False
        )
    ids = {m: int(tokenizer.convert_tokens_to_ids(PREFIX_TEXT[m])) for m in Mode}
    if any(ids[m] >= rows_before for m in missing):
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=RESIZE_MULTIPLE, mean_resizing=False)
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    with torch.no_grad():
        if inp.shape[0] > rows_before:  # rows added by the resize: the new tokens' (set below) and padding
            inp[rows_before:] = 0
            if out is not None and not tied:
                out.weight[rows_before:] = 0
        for m in missing:
            src = list(text_ids[m])
            inp[ids[m]] = inp[src].float().mean(dim=0).to(inp.dtype)
            if out is not None and not tied:
                out.weight[ids[m]] = out.weight[src].float().mean(dim=0).to(out.weight.dtype)
    if _is_tied(model) != tied:
        raise RuntimeError(f"embedding tying changed while adding mode tokens (tied before: {tied})")
    report = ModeTokenReport(
        ids=ids,
        added=tuple(missing),
        init_source=text_ids,
        rows_before=rows_before,
        rows_after=model.get_input_embeddings().weight.shape[0],
        tokenizer_size=len(tokenizer),
        tied=tied,
        reused=reused,
    )
    return report, tokenizer


def verify_checkpoint(path: Path, report: ModeTokenReport, expected_rows: dict[str, torch.Tensor]) -> None:
    """Reload ``path`` and check it against ``report`` and the expected embedding rows.

    ``expected_rows``: ``"input"`` -> (2, hidden) rows of the GENERAL and PERSONALIZED ids, and ``"output"`` ->
    the same for an untied output embedding. Raises ``RuntimeError`` naming the first mismatch.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").eval()
    prefixes = resolve_prefixes(tok, require_single_token=True)
    got = {m: prefixes.ids[m][0] for m in Mode}
    if got != report.ids:
        raise RuntimeError(f"{path}: prefix ids after reload {got} != {report.ids}")
    text = _ROUND_TRIP_TEXT.format(g=Mode.GENERAL.prefix, p=Mode.PERSONALIZED.prefix)
    enc = tok.encode(text, add_special_tokens=False)
    if enc.count(got[Mode.GENERAL]) != 1 or enc.count(got[Mode.PERSONALIZED]) != 1 or enc[0] != got[Mode.GENERAL]:
        raise RuntimeError(f"{path}: {text!r} encodes as {enc}, without exactly one id per prefix")
    if tok.decode(enc, clean_up_tokenization_spaces=False) != text:
        raise RuntimeError(f"{path}: decode(encode({text!r})) = {tok.decode(enc)!r}")
    if _is_tied(model) != report.tied:
        raise RuntimeError(f"{path}: embeddings tied={_is_tied(model)} after reload, expected {report.tied}")
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != report.rows_after or len(tok) > rows:
        raise RuntimeError(f"{path}: {rows} embedding rows for {len(tok)} tokens, expected {report.rows_after}")
    order = [got[Mode.GENERAL], got[Mode.PERSONALIZED]]
    checks = [("input", model.get_input_embeddings().weight)]
    if not report.tied:
        checks.append(("output", model.get_output_embeddings().weight))
    for name, weight in checks:
        if not torch.equal(weight[order].detach().cpu(), expected_rows[name]):
            raise RuntimeError(f"{path}: {name} embedding rows of the mode tokens differ after reload")
    with torch.no_grad():
        logits = model(torch.tensor([enc])).logits
    if logits.shape != (1, len(enc), rows) or not torch.isfinite(logits).all():
        finite = bool(torch.isfinite(logits).all())
        raise RuntimeError(f"{path}: forward pass gave logits of shape {tuple(logits.shape)}, all finite: {finite}")


def prepare_checkpoint(base_dir: Path, out_dir: Path, overwrite: bool = False) -> ModeTokenReport:
    """Write ``base_dir`` + mode tokens to ``out_dir`` atomically (temp dir, verify, rename); see the module doc.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false.
        FileNotFoundError: ``base_dir`` is not a directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, out_dir = Path(base_dir).resolve(), Path(out_dir).resolve()
    if not base_dir.is_dir():
        raise FileNotFoundError(f"base checkpoint directory {base_dir} does not exist")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    report, tokenizer = add_mode_tokens(model, tokenizer)
    order = [report.ids[Mode.GENERAL], report.ids[Mode.PERSONALIZED]]
    expected = {"input": model.get_input_embeddings().weight[order].detach().cpu().clone()}
    if not report.tied:
        expected["output"] = model.get_output_embeddings().weight[order].detach().cpu().clone()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        copied = []
        for f in sorted(base_dir.iterdir()):
            if (
                f.is_file()
                and not f.name.startswith(".")
                and not (tmp / f.name).exists()
                and not f.name.endswith(_WEIGHT_SUFFIXES)
            ):
                shutil.copy2(f, tmp / f.name)
                copied.append(f.name)
        verify_checkpoint(tmp, report, expected)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for m in Mode:
        if m in report.added:
            logger.info(
                "added %s as token %d%s; embedding row = mean of rows %s%s",
                m.prefix,
                report.ids[m],
                f" (renamed from {report.reused[m]})" if m in report.reused else "",
                list(report.init_source[m]),
                "" if report.tied else " (input and lm_head)",
            )
        else:
            logger.info("%s was already token %d; left unchanged", m.prefix, report.ids[m])
    logger.info(
        "embedding rows %d -> %d (%s), tokenizer size %d, embeddings %s; copied %s; verified and wrote %s",
        report.rows_before,
        report.rows_after,
        "resized" if report.resized else "no resize",
        report.tokenizer_size,
        "tied" if report.tied else "untied",
        copied or "no extra files",
        out_dir,
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``run_cli``: a user error is one ``error:`` line and exit status 2)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = Parser(
        prog="python -m verl_personadual.apps.add_mode_tokens",
        description=(
            "Copy a Hugging Face causal-LM checkpoint and add the mode prefixes "
            f"{' and '.join(PREFIX_TEXT.values())} to its tokenizer as dedicated special tokens. Each new "
            "token's embedding row (and lm_head row when untied) is the mean of the rows of the prefix text's "
            "tokens. Spare embedding rows are used when the checkpoint has them; otherwise unused reserved special "
            "tokens (<|reserved_special_token_N|>, e.g. Llama 3.1) are renamed to the prefixes; otherwise the "
            f"embeddings are resized to a multiple of {RESIZE_MULTIPLE} rows. Prefixes that already are tokens "
            "are left alone (re-running is a no-op). The copy is reloaded and verified (ids, encode/decode, "
            "rows, tying, a forward pass) in a temporary directory, "
            "then renamed to OUT_DIR."
        ),
    )
    parser.add_argument("base_dir", type=Path, help="base checkpoint directory (config, weights, tokenizer)")
    parser.add_argument(
        "out_dir",
        type=Path,
        help="directory to write (one that holds the same checkpoint with mode tokens is left as it is)",
    )
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    args = parser.parse_args(argv)
    check_model(str(args.base_dir), "BASE_DIR")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = args.base_dir.resolve()
    build = Build("add_mode_tokens", "mode-token-checkpoint", {"base": str(base), "base_fingerprint": None})
    if base.is_dir():
        build = replace(build, inputs={"base": str(base), "base_fingerprint": checkpoint_fingerprint(base)})
    with claim_output(args.out_dir, build, overwrite=args.overwrite, staged=True, flag="OUT_DIR") as claim:
        if claim.done:
            print(f"{args.out_dir} already holds {base} with mode tokens; left as it is")
            return 0
        prepare_checkpoint(base, claim.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
