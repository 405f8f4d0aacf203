"""No credential reaches a file or a terminal, and each reaches the server as the Bearer key: runs of build_rl,
build_sft and eval run against the local OpenAI fake server, with a key planted in the endpoint URL (user-info:
the builders and the failing eval run) or in PERSONADUAL_LLM_API_KEY (the eval run); every file they write and
their stdout / stderr are searched for both keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai_server import OpenAITestServer

from verl_personadual.utils.llm import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

REPO = Path(__file__).resolve().parents[2]
URL_KEY = "sk-planted-in-url-7f3a91"
ENV_KEY = "sk-planted-in-env-42c1d0"


def reply(body: dict) -> str:
    """An aligned persona for persona requests, a short expert answer for everything else."""
    if 'Reply with only a JSON object with the key "persona"' in body["messages"][-1]["content"]:
        return json.dumps({"persona": "An amateur astronomer who reads about science."})
    return 'Because.\n{"answer": "A"}'


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """``python -m argv``; with PERSONADUAL_LLM_API_KEY set to ENV_KEY unless the URL holds a key."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    for var in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY):
        env.pop(var, None)
    if not any(URL_KEY in arg for arg in argv):
        env[ENV_API_KEY] = ENV_KEY
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env, timeout=900)


def test_planted_keys_appear_in_no_output(tiny_model_dir, tmp_path, closed_port):
    work = tmp_path / "work"
    with OpenAITestServer(reply=reply) as srv:
        port = srv.base_url.split(":")[-1].split("/")[0]
        url = f"http://{URL_KEY}@127.0.0.1:{port}/v1"
        dead = f"http://{URL_KEY}@127.0.0.1:{closed_port}/v1"

        def llm(u: str, cache: str) -> list[str]:
            return ["--llm-base-url", u, "--llm-model", "m", "--llm-cache-dir", str(work / cache)]

        eval_args = [
            "verl_personadual.eval",
            "run",
            "--model",
            str(tiny_model_dir),
            "--samples",
            "--benchmarks",
            "triviaqa",
            "--settings",
            "aligned",
            "--decoding",
            "general",
            "--max-new-tokens",
            "2",
            "--backend",
            "hf",
            "--device",
            "cpu",
            "--no-progress",
        ]
        commands = {
            "build_rl": [
                "verl_personadual.apps.build_rl",
                "--samples",
                "--aligned-personas",
                "llm",
                "--out",
                str(work / "rl"),
                "--no-progress",
                *llm(url, "cache_rl"),
            ],
            "build_sft": [
                "verl_personadual.apps.build_sft",
                "--samples",
                "--out",
                str(work / "sft"),
                "--no-progress",
                *llm(url, "cache_sft"),
            ],
            "eval": [*eval_args, "--out", str(work / "eval"), *llm(f"http://127.0.0.1:{port}/v1", "cache_eval")],
            "eval_dead": [*eval_args, "--out", str(work / "eval_dead"), *llm(dead, "cache_dead")],
        }
        with ThreadPoolExecutor(len(commands)) as pool:
            done = dict(zip(commands, pool.map(run, commands.values())))
        assert srv.requests > 0
        received = set(srv.received)
    # every request went to the chat path, with the URL's key or the variable's as the Bearer key
    assert received == {("/v1/chat/completions", f"Bearer {URL_KEY}"), ("/v1/chat/completions", f"Bearer {ENV_KEY}")}
    for name, proc in done.items():
        assert proc.returncode == (2 if name == "eval_dead" else 0), (name, proc.stderr[-2000:])
        for key in (URL_KEY, ENV_KEY):
            assert key not in proc.stdout and key not in proc.stderr, name
    # the failed run: one error line naming the redacted endpoint, and no --out left behind
    errors = [line for line in done["eval_dead"].stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"http://***@127.0.0.1:{closed_port}/v1" in errors[0] and "2 attempts" in errors[0]
    assert not (work / "eval_dead").exists()
    # the manifests record the endpoint, redacted
    redacted = f"http://***@127.0.0.1:{port}/v1"
    assert json.loads((work / "rl" / "manifest.json").read_text())["aligned_personas"]["base_url"] == redacted
    assert json.loads((work / "sft" / "manifest.json").read_text())["expert"]["base_url"] == redacted
    files = [p for p in work.rglob("*") if p.is_file()]
    assert len(files) > 20  # parquet, manifests, eval tables and plots, reply caches
    for path in files:
        data = path.read_bytes()
        for key in (URL_KEY, ENV_KEY):
            assert key.encode() not in data, path
