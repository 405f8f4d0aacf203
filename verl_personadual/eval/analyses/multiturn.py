"""RQ6, multi-turn robustness (the paper's Table 3): does the model keep its single-turn mode choice when the
question comes second in a dialogue, after a question of the other family?

    python -m verl_personadual.eval multiturn --run runs/rl --out runs/rl_multiturn
    python -m verl_personadual.eval multiturn --run runs/toy_rl --out runs/toy_mt --personalized task=helpful

Dialogues (``dialogues.jsonl``). The run's rows are split into general and personalized questions
(``pools``: by source, or ``--personalized FIELD=V,...``). Each row is the *second* turn of exactly one dialogue,
in the order that ends with its family: ``general_to_personalized`` (a general first turn, then a personalized
row) or ``personalized_to_general``; its first turn is a row of the other family drawn with
``random.Random(f"{seed}:{order}")``. The first turn is finished: the first row's prompt, then the model's own
single-turn free response to it from the run (its mode prefix, then the decoded text; ``prompts.build_dialogue``).

Second turns are generated after the whole dialogue, with the run's checkpoint, prompt style, chat template and
sampling settings (``--max-new-tokens`` may cap them), and scored like single-turn responses. ``--decoding``
(default ``free``) names the run's decoding that gives the first turns and the single-turn modes, and how second
turns choose their mode: ``free_constrained`` restricts their first token to the two mode prefixes, as in
``eval run`` (``mode_probs.choose_modes``). ``predictions.jsonl``
(one line per dialogue, resumable; ``multiturn_config.json`` pins checkpoint and sampling) holds ``dialogue_id``,
``order``, ``first_row_id``, ``second_row_id`` and the
second row's ``benchmark``, ``task``, ``setting``, ``family``, then ``mode`` (second turn), ``single_turn_mode``,
``aligned``, ``correct``, ``single_turn_correct``, ``response_tokens``, ``truncated``, ``response``.

Mode-alignment rate: the share of dialogues whose second-turn mode equals the mode the model chose for the same
row in the single-turn run, over dialogues whose single-turn mode is known (rows where it was ``unknown`` have no
reference and are counted apart). Tables (``tables/``):

- ``alignment.{md,csv}``: per order: dialogues, compared, aligned %, second-turn accuracy vs single-turn accuracy
  of the same rows, % of second turns in an unknown mode;
- ``deviation.{md,csv}`` (Table 3): per order, family and benchmark (``--by task``: task) of the second turn:
  compared, shifted (modes differ), deviation % (= 100 - alignment) and where the shifted ones went;
- ``plots/alignment.png`` and ``plots/deviation.png`` (% axes fixed to 0-100).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from verl_personadual.core.modes import (
    MODE_NAMES,
    PREFIX_TEXT,
    UNKNOWN_MODE,
    UNKNOWN_MODE_NAME,
    Mode,
    mode_name,
    resolve_prefixes,
)
from verl_personadual.core.prompts import build_dialogue
from verl_personadual.data.eval_sets import EvalRow
from verl_personadual.data.families import (
    GENERAL,
    PERSONALIZED,
    Selector,
    family_of,
    split_families,
)
from verl_personadual.data.preflight import PreflightError
from verl_personadual.eval.baselines import PromptStyle, build_messages, mode_from_text
from verl_personadual.eval.generate import (
    BACKENDS,
    Decoding,
    DecodingParams,
    make_generator,
    prompt_ids,
    request_seed,
)
from verl_personadual.eval.mode_choice import choose_modes
from verl_personadual.eval.plots import PCT, BarSeries, hbar_figure, no_data, pyplot, save_figure, write_table
from verl_personadual.eval.pools import cell_sort_key, pin_config, read_run
from verl_personadual.eval.run import read_mode, score_response
from verl_personadual.eval.store import PredictionStore, read_predictions
from verl_personadual.utils.atomic import atomic_write_text
from verl_personadual.utils.cli import count, non_negative, torch_device, torch_dtype
from verl_personadual.utils.fingerprint import model_identity

__all__ = [
    "ORDERS",
    "Dialogue",
    "build_dialogues",
    "first_response",
    "alignment_table",
    "deviation_table",
    "add_parser",
    "command",
]

logger = logging.getLogger(__name__)

ORDERS = (f"{GENERAL}_to_{PERSONALIZED}", f"{PERSONALIZED}_to_{GENERAL}")
RECORD_KIND = "second_turn"


@dataclass(frozen=True)
class Dialogue:
    """A two-turn dialogue: ``first`` answered by ``first_response``, then ``second`` (module docstring)."""

    dialogue_id: str
    order: str
    first_row_id: str
    second_row_id: str
    first_response: str


def first_response(record: Mapping[str, Any]) -> str:
    """The assistant turn of a finished single-turn free response: its mode prefix (dropped from the decoded text
    when it is a special token), then the text; a response in no mode is its text alone."""
    text = str(record["response"])
    if record["mode"] == UNKNOWN_MODE_NAME or mode_from_text(text) != UNKNOWN_MODE:
        return text
    return PREFIX_TEXT[Mode.parse(record["mode"])] + text


def build_dialogues(
    rows: Sequence[EvalRow], single: Mapping[str, Mapping[str, Any]], selector: Selector | None, seed: int
) -> list[Dialogue]:
    """One dialogue per row as its second turn (module docstring), in the order of ``ORDERS`` then of ``rows``;
    ``single``: row_id -> the run's single-turn record (its response finishes a first turn).

    Raises PreflightError when a family is empty (the message names ``--personalized``)."""
    fam = split_families(rows, selector)
    for name, members in fam.items():
        if not members:
            raise PreflightError(
                f"no {name} row among {len(rows)} rows "
                f"({'--personalized ' + str(selector) if selector else 'personalized = a personalized benchmark'}): "
                "a dialogue needs both families; for the toy task use --personalized task=helpful"
            )
    out = []
    for order in ORDERS:
        second_family = order.split("_to_")[1]
        other = fam[GENERAL if second_family == PERSONALIZED else PERSONALIZED]
        rng = random.Random(f"{seed}:{order}")
        for row in fam[second_family]:
            first = rng.choice(other)
            out.append(
                Dialogue(f"{order}:{row.row_id}", order, first.row_id, row.row_id, first_response(single[first.row_id]))
            )
    return out


def _pct(values: Sequence[float]) -> float | None:
    return 100.0 * statistics.fmean(values) if values else None


def alignment_table(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per order (module docstring), from the second-turn records."""
    header = [
        "order",
        "dialogues",
        "compared",
        f"aligned{PCT}",
        f"second_turn_accuracy{PCT}",
        f"single_turn_accuracy{PCT}",
        f"second_turn_unknown_mode{PCT}",
    ]
    lines = []
    for order in ORDERS:
        recs = [r for r in records if r["order"] == order]
        if not recs:
            continue
        compared = [r for r in recs if r["single_turn_mode"] != UNKNOWN_MODE_NAME]
        lines.append(
            [
                order,
                len(recs),
                len(compared),
                _pct([float(r["aligned"]) for r in compared]),
                _pct([float(r["correct"]) for r in recs]),
                _pct([float(r["single_turn_correct"]) for r in recs]),
                _pct([float(r["mode"] == UNKNOWN_MODE_NAME) for r in recs]),
            ]
        )
    return header, lines


def deviation_table(records: Sequence[Mapping[str, Any]], by: str = "benchmark") -> tuple[list[str], list[list[Any]]]:
    """Table 3: per order, second-turn family and ``by`` (benchmark or task), over compared dialogues."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r["single_turn_mode"] != UNKNOWN_MODE_NAME:
            groups[(r["order"], r["family"], str(r[by]))].append(r)
    header = [
        "order",
        "family",
        by,
        "compared",
        "shifted",
        f"deviation{PCT}",
        "to_general",
        "to_personalized",
        "to_unknown",
    ]
    lines = []
    for key in sorted(
        groups, key=lambda k: (ORDERS.index(k[0]), k[1], cell_sort_key(k[2], "") if by == "benchmark" else k[2])
    ):
        recs = groups[key]
        shifted = [r for r in recs if not r["aligned"]]
        lines.append(
            [*key, len(recs), len(shifted), 100.0 * len(shifted) / len(recs)]
            + [sum(r["mode"] == m for r in shifted) for m in MODE_NAMES]
        )
    return header, lines


def alignment_figure(table: tuple[list[str], list[list[Any]]]) -> Any:
    plt = pyplot()
    _, lines = table
    fig, ax = plt.subplots(figsize=(6, 3))
    if lines:
        bars = ax.bar([l[0].replace("_to_", " → ") for l in lines], [l[3] or 0.0 for l in lines], color="tab:blue")
        ax.bar_label(bars, labels=[f"{l[3]:.1f} % of {l[2]}" if l[3] is not None else "-" for l in lines], fontsize=8)
    else:
        no_data(ax, "no dialogues")
    ax.set_ylim(0, 100)
    ax.set_ylabel("mode-alignment rate (% of dialogues)")
    ax.set_title("Second-turn mode = single-turn mode")
    return fig


def deviation_figure(table: tuple[list[str], list[list[Any]]]) -> Any:
    _, lines = table
    names = [f"{l[0].replace('_to_', ' → ')}: {l[2]}" for l in lines]
    series = [
        BarSeries(
            f"{fam} second turn",
            [l[5] if l[1] == fam else None for l in lines],
            color,
            annotations=[f"{l[4]}/{l[3]}" for l in lines],
        )
        for fam, color in ((GENERAL, "tab:blue"), (PERSONALIZED, "tab:orange"))
    ]
    return hbar_figure(
        names,
        series,
        width=7,
        empty="no dialogue with a known single-turn mode",
        xlabel="deviation ratio (% of compared dialogues whose mode shifted)",
        title="Mode deviation by task of the second turn",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "multiturn",
        help="RQ6: two-turn dialogues in both orders, mode-alignment rate and Table 3",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, type=Path, help="finished `eval run` directory with --decoding free")
    p.add_argument("--out", required=True, type=Path, help="output directory (re-use it to resume)")
    p.add_argument("--model", help="checkpoint (default: the run's, from its run_config.json)")
    p.add_argument(
        "--personalized",
        type=Selector.parse,
        metavar="FIELD=V[,V...]",
        help="rows that are personalized questions (default: personalized benchmarks; toy: task=helpful)",
    )
    p.add_argument(
        "--decoding",
        default=Decoding.FREE.value,
        choices=[Decoding.FREE.value, Decoding.FREE_CONSTRAINED.value],
        help="single-turn reference and second-turn decoding (default free)",
    )
    p.add_argument("--seed", type=non_negative, default=0, help="pairing seed (default 0)")
    p.add_argument(
        "--by", default="benchmark", choices=["benchmark", "task"], help="Table 3 grouping (default benchmark)"
    )
    p.add_argument("--max-new-tokens", type=count, help="second-turn length cap (default: the run's)")
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="auto: vLLM on GPU if installed, else transformers"
    )
    p.add_argument("--device", type=torch_device, help="transformers device (default cuda if available, else cpu)")
    p.add_argument("--dtype", type=torch_dtype, default="auto", help="transformers dtype: auto, bfloat16, float32, ...")
    p.add_argument("--batch-size", type=count, default=16, help="responses per generation batch (and per JSONL flush)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON for vllm.LLM, e.g. '{\"tensor_parallel_size\": 2}'")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=command)


def _dialogues_file(out: Path, dialogues: Sequence[Dialogue]) -> None:
    text = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in dialogues)
    path = out / "dialogues.jsonl"
    if path.exists() and path.read_text(encoding="utf-8") != text:
        raise PreflightError(f"{path} holds other dialogues (another run, seed or --personalized); use another --out")
    atomic_write_text(path, text)


def command(a: argparse.Namespace) -> list[Path]:
    """Run ``multiturn`` (module docstring); returns the written paths."""
    decoding = Decoding(a.decoding)
    run = read_run(a.run, need=[decoding.value])
    model = a.model or run.config.get("model")
    if not model:
        raise PreflightError(f"{a.run}/run_config.json names no model; give --model")
    single = run.by_decoding(decoding.value)
    rows = {r.row_id: r for r in run.rows}
    dialogues = build_dialogues(run.rows, single, a.personalized, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    _dialogues_file(out, dialogues)
    style = PromptStyle(run.config.get("prompt_style", PromptStyle.PERSONA.value))
    ctk = run.config.get("chat_template_kwargs") or {}
    saved = run.config.get("decoding") or {}
    params = DecodingParams(**{**saved, **({"max_new_tokens": a.max_new_tokens} if a.max_new_tokens else {})})
    pin_config(
        out / "multiturn_config.json", {**model_identity(model), "decoding": a.decoding, "sampling": asdict(params)}
    )
    store = PredictionStore(out / "predictions.jsonl")
    todo = [d for d in dialogues if (d.dialogue_id, RECORD_KIND) not in store]
    logger.info("%d dialogues, %d to generate (model %s)", len(dialogues), len(todo), model)
    if todo:
        gen = make_generator(a.backend, model, params, a.device, a.dtype, json.loads(a.engine_kwargs))
        prefixes = resolve_prefixes(gen.tokenizer)
        with tqdm(total=len(todo), desc="second turns", unit="dialogue", disable=a.no_progress) as bar:
            for start in range(0, len(todo), a.batch_size):
                batch = todo[start : start + a.batch_size]
                prompts = [
                    prompt_ids(
                        gen.tokenizer,
                        build_dialogue(
                            build_messages(rows[d.first_row_id], style),
                            d.first_response,
                            build_messages(rows[d.second_row_id], style),
                        ),
                        ctk,
                    )
                    for d in batch
                ]
                heads: list[list[int]] = [[] for _ in batch]
                if decoding is Decoding.FREE_CONSTRAINED:
                    seeds = [request_seed(params.seed, f"{d.dialogue_id}|mode") for d in batch]
                    heads = [
                        list(prefixes.ids[m])
                        for m in choose_modes(gen, prompts, prefixes, params.temperature, seeds, a.batch_size)
                    ]
                outs = gen.generate(
                    [p + h for p, h in zip(prompts, heads)],
                    [params.max_new_tokens - len(h) for h in heads],
                    [request_seed(params.seed, d.dialogue_id) for d in batch],
                )
                store.append(
                    _record(
                        d,
                        rows[d.second_row_id],
                        single[d.second_row_id],
                        h + ids,
                        gen,
                        prefixes,
                        style,
                        params,
                        a.personalized,
                    )
                    for d, h, ids in zip(batch, heads, outs)
                )
                bar.update(len(batch))
    records = read_predictions(store.path)
    plt = pyplot()
    align, dev = alignment_table(records), deviation_table(records, a.by)
    written = write_table(out / "tables", "alignment", align) + write_table(out / "tables", "deviation", dev)
    for name, fig in (("alignment", alignment_figure(align)), ("deviation", deviation_figure(dev))):
        written.append(save_figure(fig, out / "plots" / f"{name}.png"))
        plt.close(fig)
    return written


def _record(
    d: Dialogue,
    row: EvalRow,
    single: Mapping[str, Any],
    ids: list[int],
    gen: Any,
    prefixes: Any,
    style: PromptStyle,
    params: DecodingParams,
    selector: Selector | None,
) -> dict[str, Any]:
    mode = read_mode(ids, gen, prefixes, style)
    text = gen.tokenizer.decode(ids, skip_special_tokens=True)
    res = score_response(row, text, mode)
    name = mode_name(mode)
    return {
        "row_id": d.dialogue_id,
        "decoding": RECORD_KIND,
        "dialogue_id": d.dialogue_id,
        "order": d.order,
        "first_row_id": d.first_row_id,
        "second_row_id": d.second_row_id,
        "benchmark": row.benchmark,
        "task": row.task,
        "setting": row.setting,
        "family": family_of(row, selector),
        "mode": name,
        "single_turn_mode": single["mode"],
        "aligned": name == single["mode"],
        "correct": res["correct"],
        "single_turn_correct": single["correct"],
        "response_tokens": len(ids),
        "truncated": len(ids) >= params.max_new_tokens,
        "response": text,
    }
