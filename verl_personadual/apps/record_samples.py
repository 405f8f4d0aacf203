"""CLI: re-record the shipped samples' placeholder LLM replies (``python -m verl_personadual.apps.record_samples
[--check]``); what is recorded and why: ``verl_personadual.data.samples``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from verl_personadual.core.prompts import (
    PERSONA_KEY,
)
from verl_personadual.data.samples import (
    CACHE_DIR,
    REPLAY_MODEL,
    eval_personas,
    expert_reply,
)
from verl_personadual.utils.cli import Parser
from verl_personadual.utils.errors import UserError, run_cli
from verl_personadual.utils.llm import (
    Reply,
    ReplyCache,
    cache_key,
)
from verl_personadual.utils.outputs import MARKER, Build, claim_output


def _sft_recordings() -> dict[str, str]:
    from verl_personadual.apps import build_sft
    from verl_personadual.data import sft_rows

    with tempfile.TemporaryDirectory() as tmp:
        args = build_sft.make_parser().parse_args(["--samples", "--out", tmp, "--no-progress"])
        cfg = build_sft.config_from_args(args)
        rows = sft_rows.prepare(cfg).flat_rows()
    return {
        cache_key(REPLAY_MODEL, messages, cfg.sampling): expert_reply(rows[i], mode)
        for i, mode, messages in sft_rows.expert_requests(rows)
    }


def _eval_recordings() -> dict[str, str]:
    from verl_personadual.core.prompts import build_aligned_persona_request
    from verl_personadual.data.benchmarks import load_benchmark
    from verl_personadual.data.personas import ALIGNED_SAMPLING
    from verl_personadual.data.samples import eval_sample_paths

    paths = eval_sample_paths()
    out = {}
    for bench, persona in eval_personas().items():
        reply = json.dumps({PERSONA_KEY: persona})
        for item in load_benchmark(bench, paths[bench])[0].items:
            out[cache_key(REPLAY_MODEL, build_aligned_persona_request(item.question), ALIGNED_SAMPLING)] = reply
    return out


def recordings() -> dict[str, str]:
    """Cache key -> reply of every recorded request, computed now from the sample files and prompt templates."""
    return _sft_recordings() | _eval_recordings()


def stale_keys(root: Path = CACHE_DIR) -> list[str]:
    """Keys whose entry under ``root`` is missing, different or not recorded any more (empty: up to date)."""
    want = recordings()
    cache = ReplyCache(root)
    bad = {k for k, reply in want.items() if cache.get(k) != Reply(reply)}
    return sorted(bad | (cache.keys() - set(want)))


def record(root: Path = CACHE_DIR) -> int:
    """Rewrite ``root`` with exactly :func:`recordings`; returns the count. ``root`` is written whole, under its
    lock (``utils.outputs``: built next to it, then swapped in); UserError when it holds anything but a reply
    cache (``<2 hex>/<key>.json``), which it would replace."""
    if root.is_dir():
        stranger = next((p for p in sorted(root.iterdir()) if not _cache_entry(p)), None)
        if stranger is not None:
            raise UserError(f"--root {root}: holds {stranger.name!r}, not a reply cache entry; use another --root")
    want = recordings()
    with claim_output(
        root, Build("record_samples", "reply-cache"), overwrite=True, staged=True, flag="--root"
    ) as claim:
        cache = ReplyCache(claim.dir)
        for key, reply in want.items():
            cache.put(key, Reply(reply))
    return len(want)


def _cache_entry(path: Path) -> bool:
    """A shard folder of ``ReplyCache`` (two hex digits: JSON files, and temporaries a killed run left, which the
    claim removes) or this command's marker."""
    if path.name == MARKER:
        return True
    if not (path.is_dir() and re.fullmatch(r"[0-9a-f]{2}", path.name)):
        return False
    return all(p.is_file() and (p.suffix == ".json" or p.name.startswith(".")) for p in path.iterdir())


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0, or 1 when ``--check`` finds the cache stale; a bad argument is one ``error:`` line and
    exit status 2 (``run_cli``)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = Parser(
        prog="python -m verl_personadual.apps.record_samples",
        description="Re-record (or --check) the placeholder LLM replies shipped for offline `--samples` runs of "
        "build_sft and eval run (see this module's docstring for what they are).",
    )
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the shipped cache is stale")
    p.add_argument("--root", type=Path, default=CACHE_DIR, help="cache directory (default: the shipped one)")
    args = p.parse_args(argv)
    if args.root.exists() and not args.root.is_dir():
        raise UserError(f"--root {args.root}: not a directory")
    if args.check:
        stale = stale_keys(args.root)
        if stale:
            print(
                f"{args.root}: {len(stale)} recorded replies are stale; run `python -m "
                f"verl_personadual.apps.record_samples`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.root}: up to date")
        return 0
    print(f"{args.root}: {record(args.root)} replies recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
