"""Session-wide fixtures: a locally built tokenizer (with and without dedicated mode tokens) and a tiny,
randomly initialised Qwen3 model. Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MODE_TOKENS = ["[General_mode]", "[Personalized_mode]"]

_CORPUS = [
    "I am a nurse. My question is: which vitamin deficiency causes scurvy? A. Vitamin A B. Vitamin C",
    "Reason step by step, then give your final answer on the last line as a JSON object",
    '{"answer": "B"} {"answer": "yes"} {"answer": "no"} the answer is (C) \\boxed{42}',
    "General mode personalized mode persona user question options think answer because",
    "[General_mode] [Personalized_mode] General_mode Personalized_mode",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?()[]{}<>'\"-_/\\+=*",
]


def build_tokenizer(out_dir: Path, with_mode_tokens: bool, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE tokenizer on a tiny corpus and save it as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = BASE_SPECIALS + (MODE_TOKENS if with_mode_tokens else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=MODE_TOKENS if with_mode_tokens else [],
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizer whose mode prefixes are dedicated special tokens (one id each)."""
    return build_tokenizer(tmp_path_factory.mktemp("tok_modes"), with_mode_tokens=True)


@pytest.fixture(scope="session")
def text_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizer without mode tokens: the prefixes encode as several text tokens."""
    return build_tokenizer(tmp_path_factory.mktemp("tok_text"), with_mode_tokens=False)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def text_tokenizer(text_tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(text_tokenizer_dir)


def build_tiny_model(out_dir: Path, tokenizer_dir: Path, vocab_size: int | None = None) -> Path:
    """A randomly initialised 2-layer Qwen3 (hidden 64) saved with the tokenizer next to it."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=vocab_size or len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen3ForCausalLM(cfg)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """Tiny random Qwen3 with the mode-token tokenizer (embedding rows = tokenizer size)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3"), tokenizer_dir)


@pytest.fixture(scope="session")
def ray_tq():
    """A local Ray cluster with a TransferQueue controller + 2 storage units, shared by the whole session."""
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    # TQ actors take 1 CPU each; the logical count is independent of the 2 physical cores.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 2}}}))
    try:
        yield tq
    finally:
        tq.close()
        ray.shutdown()


@pytest.fixture(scope="session")
def ppo_config():
    """verl 0.9.1's real, fully generated PPO trainer config (the defaults main_ppo starts from)."""
    from importlib import resources

    from omegaconf import OmegaConf

    path = resources.files("verl.trainer.config") / "_generated_ppo_trainer.yaml"
    return OmegaConf.load(str(path))
