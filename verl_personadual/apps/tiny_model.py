"""Write a tiny, randomly initialised Qwen3 model with a locally trained tokenizer that has the two mode tokens.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a small corpus (the project's own prompt
templates plus any extra text), and the model is built from a ``transformers`` config with random weights. It is
what the CPU recipes (backbone ``cpu_tiny``), the quickstart and the tests train and evaluate; it knows nothing
until it is trained.

    python -m verl_personadual.apps.tiny_model --out models/tiny            # 128 hidden x 4 layers, mode tokens
    python -m verl_personadual.apps.tiny_model --out models/tiny_text --text-prefixes --hidden 64 --layers 2

The output directory is a normal Hugging Face checkpoint (``config.json``, ``model.safetensors``, tokenizer files)
that verl, ``transformers`` and ``python -m verl_personadual.check --tokenizer DIR`` accept.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from verl_personadual.core.modes import PREFIX_TEXT, Mode
from verl_personadual.core.prompts import TaskFamily, answer_instruction, format_answer
from verl_personadual.data.preflight import check_output_dir
from verl_personadual.utils.cli import Parser, count, non_negative
from verl_personadual.utils.errors import run_cli
from verl_personadual.utils.outputs import OVERWRITE_HELP, Build, claim_output, inputs_from

__all__ = [
    "CHAT_TEMPLATE",
    "BASE_SPECIALS",
    "MODE_TOKENS",
    "BASE_CORPUS",
    "TinyModelSpec",
    "build_tokenizer",
    "build_model",
    "write_tiny_model",
    "main",
]

#: Qwen-style chat template without a system prompt or thinking switch; the assistant turn opens with
#: ``<|im_start|>assistant\n``, exactly where SFT data puts the mode token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BASE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MODE_TOKENS = (PREFIX_TEXT[Mode.GENERAL], PREFIX_TEXT[Mode.PERSONALIZED])

#: Corpus of the test tokenizer (vocabulary 400); kept stable because tests build on its ids.
BASE_CORPUS: tuple[str, ...] = (
    "I am a nurse. My question is: which vitamin deficiency causes scurvy? A. Vitamin A B. Vitamin C",
    "Reason step by step, then give your final answer on the last line as a JSON object",
    '{"answer": "B"} {"answer": "yes"} {"answer": "no"} the answer is (C) \\boxed{42}',
    "General mode personalized mode persona user question options think answer because",
    "[General_mode] [Personalized_mode] General_mode Personalized_mode",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?()[]{}<>'\"-_/\\+=*",
)


def template_corpus() -> tuple[str, ...]:
    """The project's fixed prompt and answer text (every answer instruction, answer lines), so that a tokenizer
    trained on it encodes real prompts compactly."""
    lines = [answer_instruction(f) for f in TaskFamily]
    lines += [format_answer(x) for x in ("A", "B", "C", "D", "yes", "no", "maybe")]
    lines.append("I am a student. My question is:")
    lines.append(CHAT_TEMPLATE.replace("{%", "").replace("%}", "") + " user assistant")
    return tuple(lines)


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the random Qwen3 (defaults: the smallest model that learns the quickstart's toy task).

    Input and output embeddings are untied by default, as in the 8B backbones: with tied embeddings, RL updates
    of a mode token's output row (the mode *choice*) also move its input row, which every later token of the
    response reads, so learning the choice rewrites how each mode answers.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")


def build_tokenizer(
    out_dir: Path,
    with_mode_tokens: bool = True,
    vocab_size: int = 400,
    corpus: Iterable[str] = BASE_CORPUS,
    whole_words: Sequence[str] = (),
) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus`` and save it as a HF fast tokenizer in ``out_dir``.

    With ``with_mode_tokens`` the two prefixes are dedicated special tokens (one id each); without, they encode
    as several text tokens. ``eos`` = ``<|im_end|>``, ``pad`` = ``<|endoftext|>``. Deterministic for the same
    arguments.

    ``whole_words`` makes a task tokenizer: each of these words is split off as a piece of its own (so it is the
    same token wherever it appears), and merges may then cross spaces everywhere else, so the fixed template
    text between them becomes a few long tokens (a toy prompt of ~100 word-level tokens becomes ~40). Without
    it, text is split at word boundaries first, as in GPT-2 style tokenizers.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if whole_words:
        words = "|".join(re.escape(w) for w in sorted(set(whole_words), key=len, reverse=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(rf"\b(?:{words})\b"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(BASE_SPECIALS) + (list(MODE_TOKENS) if with_mode_tokens else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(corpus) * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(MODE_TOKENS) if with_mode_tokens else [],
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(out_dir)
    return Path(out_dir)


def build_model(out_dir: Path, tokenizer_dir: Path, spec: TinyModelSpec, vocab_size: int | None = None) -> Path:
    """Save a randomly initialised Qwen3 of ``spec`` (embedding rows = ``vocab_size`` or the tokenizer's size)
    with the tokenizer of ``tokenizer_dir`` next to it."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(spec.seed)
    cfg = Qwen3Config(
        vocab_size=vocab_size or len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    Qwen3ForCausalLM(cfg).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return Path(out_dir)


def write_tiny_model(
    out_dir: Path,
    spec: TinyModelSpec = TinyModelSpec(),
    with_mode_tokens: bool = True,
    vocab_size: int = 1000,
    extra_corpus: Sequence[str] = (),
    whole_words: Sequence[str] = (),
) -> Path:
    """Tokenizer (base corpus + prompt templates + ``extra_corpus``; ``whole_words`` as in :func:`build_tokenizer`)
    and random model in ``out_dir``, written atomically: a crash leaves no half-written directory. An existing
    ``out_dir`` is an error."""
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.staging-") as tmp:
        staged = Path(tmp) / "model"
        tok_dir = build_tokenizer(
            Path(tmp) / "tokenizer",
            with_mode_tokens=with_mode_tokens,
            vocab_size=vocab_size,
            corpus=(*BASE_CORPUS, *template_corpus(), *extra_corpus),
            whole_words=whole_words,
        )
        build_model(staged, tok_dir, spec)
        staged.rename(out)
    return out


def _parser() -> argparse.ArgumentParser:
    d = TinyModelSpec()
    p = Parser(
        prog="python -m verl_personadual.apps.tiny_model",
        description="Write a tiny randomly initialised Qwen3 + a locally trained tokenizer with the two mode "
        "tokens (no download) as a Hugging Face checkpoint, for running the recipes on CPU.",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output directory (one holding the same model is left as it is)"
    )
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--hidden", type=count, default=d.hidden_size, help="hidden size (default: %(default)s)")
    p.add_argument("--layers", type=count, default=d.num_layers, help="decoder layers (default: %(default)s)")
    p.add_argument("--vocab", type=count, default=1000, help="BPE vocabulary size (default: %(default)s)")
    p.add_argument(
        "--seed", type=non_negative, default=d.seed, help="weight initialisation seed (default: %(default)s)"
    )
    p.add_argument(
        "--text-prefixes",
        action="store_true",
        help="do not add the mode prefixes as dedicated tokens (they then encode as several text tokens; "
        "recipes need algorithm.dual_grpo.require_mode_tokens=false)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: :func:`_main` under ``run_cli`` (a user error: one ``error:`` line, exit status 2)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    head_dim = max(8, args.hidden // 4)
    spec = TinyModelSpec(
        hidden_size=args.hidden,
        num_layers=args.layers,
        head_dim=head_dim,
        intermediate_size=2 * args.hidden,
        seed=args.seed,
    )
    check_output_dir(args.out)
    build = Build("tiny_model", "tiny-model", inputs_from(vars(args), {"out", "overwrite"}))
    with claim_output(args.out, build, overwrite=args.overwrite, staged=True) as claim:
        if claim.done:
            print(f"{args.out} already holds this tiny model (same options); left as it is")
            return 0
        write_tiny_model(claim.dir, spec, with_mode_tokens=not args.text_prefixes, vocab_size=args.vocab)
    out = args.out
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(
        f"wrote a random Qwen3 ({spec.hidden_size} hidden x {spec.num_layers} layers) + tokenizer to {out} "
        f"({size / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
