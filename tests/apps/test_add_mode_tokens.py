"""The checkpoint command on tiny local checkpoints: Qwen3 built from the text-prefix tokenizer (spare rows or a
resize), and Llama with a Llama-3-style tokenizer whose reserved special tokens are reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_personadual.apps.add_mode_tokens import (
    RESIZE_MULTIPLE,
    main,
    prepare_checkpoint,
)
from verl_personadual.apps.tiny_model import BASE_CORPUS
from verl_personadual.core.modes import Mode, resolve_prefixes

SPARE = 16


def untie(model_dir: Path) -> Path:
    """Rewrite ``model_dir`` with an independent lm_head (different values from the input embedding)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.tie_word_embeddings = False
    torch.manual_seed(1)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory, text_tokenizer_dir: Path) -> dict[str, Path]:
    """Base checkpoints: spare rows or not, tied or not; each also gets a README to be carried over."""
    made = {}
    kinds = [
        ("spare_tied", SPARE, True),
        ("full_tied", 0, True),
        ("spare_untied", SPARE, False),
        ("full_untied", 0, False),
    ]
    for name, spare, tied in kinds:
        d = tmp_path_factory.mktemp(name)
        n = len(AutoTokenizer.from_pretrained(text_tokenizer_dir))
        build_tiny_model(d, text_tokenizer_dir, vocab_size=n + spare)
        if not tied:
            untie(d)
        (d / "README.md").write_text("base model card\n")
        made[name] = d
    return made


def load(d: Path):
    return AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d)


@pytest.mark.parametrize("name", ["spare_tied", "full_tied", "spare_untied", "full_untied"])
def test_adds_tokens_and_initialises_rows(name: str, bases: dict[str, Path], tmp_path: Path) -> None:
    base = bases[name]
    base_tok, base_model = load(base)
    n_tok, rows = len(base_tok), base_model.get_input_embeddings().weight.shape[0]
    text_ids = {m: base_tok.encode(m.prefix, add_special_tokens=False) for m in Mode}
    assert all(len(v) > 1 for v in text_ids.values())

    out = tmp_path / "with_modes"
    report = prepare_checkpoint(base, out)
    tok, model = load(out)

    assert report.ids == {Mode.GENERAL: n_tok, Mode.PERSONALIZED: n_tok + 1}
    assert report.added == (Mode.GENERAL, Mode.PERSONALIZED)
    assert len(tok) == n_tok + 2
    assert {m: v[0] for m, v in resolve_prefixes(tok, require_single_token=True).ids.items()} == report.ids
    # spare rows used as they are; otherwise resized to the next multiple of 64 rows, padding rows zero
    expected_rows = rows if name.startswith("spare") else -(-(n_tok + 2) // 64) * 64
    assert RESIZE_MULTIPLE == 64 and expected_rows % 64 == (0 if name.startswith("full") else rows % 64)
    assert report.rows_after == expected_rows == model.get_input_embeddings().weight.shape[0]
    assert model.config.vocab_size == expected_rows
    assert report.resized == name.startswith("full") and report.reused == {}
    if name.startswith("full"):
        assert expected_rows > n_tok + 2
        assert not model.get_input_embeddings().weight[n_tok + 2 :].any()
        assert not model.lm_head.weight[n_tok + 2 :].any()
    # rows = mean of the prefix text's rows (input; and lm_head when untied); other rows untouched
    emb, base_emb = model.get_input_embeddings().weight, base_model.get_input_embeddings().weight
    for m in Mode:
        torch.testing.assert_close(emb[report.ids[m]], base_emb[text_ids[m]].mean(0), rtol=0, atol=1e-6)
    assert torch.equal(emb[:n_tok], base_emb[:n_tok])
    tied = name.endswith("_tied")
    assert report.tied == tied
    assert (model.lm_head.weight.data_ptr() == emb.data_ptr()) == tied
    assert model.config.tie_word_embeddings == tied
    if not tied:
        head, base_head = model.lm_head.weight, base_model.lm_head.weight
        for m in Mode:
            torch.testing.assert_close(head[report.ids[m]], base_head[text_ids[m]].mean(0), rtol=0, atol=1e-6)
        assert torch.equal(head[:n_tok], base_head[:n_tok])
        assert not torch.equal(head[report.ids[Mode.GENERAL]], emb[report.ids[Mode.GENERAL]])
    # round trip and a forward pass on the reloaded checkpoint
    text = "[General_mode]because[Personalized_mode] answer"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == n_tok and n_tok + 1 in ids
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "because answer"
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), expected_rows) and torch.isfinite(logits).all()
    assert (out / "README.md").read_text() == "base model card\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_idempotent(bases: dict[str, Path], tmp_path: Path) -> None:
    first = tmp_path / "once"
    prepare_checkpoint(bases["full_untied"], first)
    report = prepare_checkpoint(first, tmp_path / "twice")
    assert report.added == () and not report.resized
    (tok1, m1), (tok2, m2) = load(first), load(tmp_path / "twice")
    assert tok1.get_vocab() == tok2.get_vocab()
    assert torch.equal(m1.get_input_embeddings().weight, m2.get_input_embeddings().weight)
    assert torch.equal(m1.lm_head.weight, m2.lm_head.weight)
    # in place, with --overwrite: still nothing added
    assert main([str(first), str(first), "--overwrite"]) == 0
    assert load(first)[0].get_vocab() == tok1.get_vocab()


def test_refuses_existing_output_and_missing_base(bases: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert main([str(bases["spare_tied"]), str(out)]) == 2  # a folder that is not this command's output
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine\n"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_checkpoint(tmp_path / "nope", tmp_path / "out")


def test_refuses_mismatched_tokenizer(bases: dict[str, Path], tokenizer_dir: Path, tmp_path: Path) -> None:
    """A tokenizer larger than the embedding (not this checkpoint's) is refused before anything is written."""
    base = tmp_path / "mismatch"
    model = AutoModelForCausalLM.from_pretrained(bases["full_tied"])
    model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] - 10)
    model.save_pretrained(base)
    AutoTokenizer.from_pretrained(bases["full_tied"]).save_pretrained(base)
    with pytest.raises(ValueError, match="does not belong to this checkpoint"):
        prepare_checkpoint(base, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_help() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "verl_personadual.apps.add_mode_tokens", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "[General_mode]" in res.stdout and "mean of the rows" in res.stdout and "--overwrite" in res.stdout


# --- Llama 3.x: reserved special tokens instead of a resize --------------------------------------------------------

LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
]
LLAMA_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_llama_checkpoint(out_dir: Path, specials: list[str], template: str = LLAMA_TEMPLATE) -> Path:
    """A tiny untied Llama whose tokenizer ends with Llama-3-style special tokens and has no spare rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(BASE_CORPUS) * 20, trainer=trainer)
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=template
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


def test_llama_reuses_reserved_tokens_without_resizing(tmp_path: Path) -> None:
    base = build_llama_checkpoint(tmp_path / "llama", LLAMA_SPECIALS)
    base_tok, base_model = load(base)
    n_tok = len(base_tok)
    assert base_model.get_input_embeddings().weight.shape[0] == n_tok  # no spare row, like Llama 3.1 (128,256)
    reserved = {name: base_tok.convert_tokens_to_ids(name) for name in LLAMA_SPECIALS if "reserved" in name}
    text_ids = {m: base_tok.encode(m.prefix, add_special_tokens=False) for m in Mode}

    report = prepare_checkpoint(base, tmp_path / "out")
    tok, model = load(tmp_path / "out")

    # the first two reserved tokens in id order become the prefixes: same ids, same sizes
    first, second = "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"
    assert report.reused == {Mode.GENERAL: first, Mode.PERSONALIZED: second}
    assert report.ids == {Mode.GENERAL: reserved[first], Mode.PERSONALIZED: reserved[second]}
    assert report.added == (Mode.GENERAL, Mode.PERSONALIZED)
    assert not report.resized and report.rows_after == n_tok == len(tok) == report.tokenizer_size
    assert model.config.vocab_size == n_tok
    vocab = tok.get_vocab()
    assert first not in vocab and second not in vocab
    others = ("<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|eot_id|>")
    assert {n: vocab[n] for n in others} == {n: base_tok.convert_tokens_to_ids(n) for n in others}
    # rows: mean of the prefix text's rows, input and lm_head (Llama 3.1 is untied); every other row unchanged
    emb, base_emb = model.get_input_embeddings().weight, base_model.get_input_embeddings().weight
    head, base_head = model.lm_head.weight, base_model.lm_head.weight
    changed = sorted(report.ids.values())
    for m in Mode:
        torch.testing.assert_close(emb[report.ids[m]], base_emb[text_ids[m]].mean(0), rtol=0, atol=1e-6)
        torch.testing.assert_close(head[report.ids[m]], base_head[text_ids[m]].mean(0), rtol=0, atol=1e-6)
    keep = [i for i in range(n_tok) if i not in changed]
    assert torch.equal(emb[keep], base_emb[keep]) and torch.equal(head[keep], base_head[keep])
    # tokenizer behaviour: one id per prefix, special (stripped by skip_special_tokens), chat template unchanged
    text = "[General_mode]because[Personalized_mode] answer"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == report.ids[Mode.GENERAL] and report.ids[Mode.PERSONALIZED] in ids
    assert tok.decode(ids) == text and tok.decode(ids, skip_special_tokens=True) == "because answer"
    chat = [{"role": "user", "content": "hi"}]
    rendered = [t.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for t in (tok, base_tok)]
    assert rendered[0] == rendered[1]
    # idempotent
    again = prepare_checkpoint(tmp_path / "out", tmp_path / "again")
    assert again.added == () and again.reused == {} and load(tmp_path / "again")[0].get_vocab() == vocab


def test_reserved_tokens_named_by_the_chat_template_are_not_reused(tmp_path: Path) -> None:
    template = LLAMA_TEMPLATE.replace("<|eot_id|>{% endfor %}", "<|eot_id|><|reserved_special_token_0|>{% endfor %}")
    base = build_llama_checkpoint(tmp_path / "llama", LLAMA_SPECIALS, template)
    base_tok = load(base)[0]
    report = prepare_checkpoint(base, tmp_path / "out")
    second, third = "<|reserved_special_token_1|>", "<|reserved_special_token_2|>"
    assert report.reused == {Mode.GENERAL: second, Mode.PERSONALIZED: third}
    assert report.ids[Mode.GENERAL] == base_tok.convert_tokens_to_ids("<|reserved_special_token_1|>")
    assert "<|reserved_special_token_0|>" in load(tmp_path / "out")[0].get_vocab()


def test_one_reserved_token_is_not_enough_and_the_embeddings_grow(tmp_path: Path) -> None:
    specials = [t for t in LLAMA_SPECIALS if "reserved" not in t or t.endswith("_0|>")]
    base = build_llama_checkpoint(tmp_path / "llama", specials)
    n_tok = len(load(base)[0])
    report = prepare_checkpoint(base, tmp_path / "out")
    assert report.reused == {} and report.ids == {Mode.GENERAL: n_tok, Mode.PERSONALIZED: n_tok + 1}
    assert report.rows_after == -(-(n_tok + 2) // 64) * 64 and report.rows_after % 64 == 0
