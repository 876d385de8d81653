"""The ``score`` and ``serve`` commands (argument parsing and printing only)."""

from __future__ import annotations

import argparse
import os

#: Environment variable holding the server's API key (``--api-key`` wins).
API_KEY_ENV = "REWARD_PLUGIN_API_KEY"


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="the trained model's folder (or a PEFT adapter)"
    )
    parser.add_argument(
        "--device", metavar="DEVICE", help="cpu, cuda, cuda:1, mps (default: the best available)"
    )
    parser.add_argument(
        "--dtype",
        metavar="DTYPE",
        help="float32, bfloat16, float16 (default: bfloat16 on a GPU, float32 on CPU)",
    )
    parser.add_argument(
        "--raw", action="store_true", help="raw rewards (default: normalised by reward_stats.json)"
    )
    parser.add_argument(
        "--max-length", type=int, metavar="N", help="length limit (default: the one used in training)"
    )
    parser.add_argument(
        "--token-budget",
        type=int,
        metavar="N",
        help="tokens per forward (default 16384 on a GPU, 4096 on CPU)",
    )
    parser.add_argument("--chat-template", metavar="NAME|PATH", help="chat template (default: the saved one)")


def add_serving_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score`` and ``serve`` to a ``reward-plugin`` sub-command parser."""
    score = subparsers.add_parser(
        "score",
        help="score every response of a data file with a trained reward model (JSON Lines out)",
        description="One JSON line per input row, in input order: the reward(s) of its responses; for a "
        "group (several responses of one prompt) also the best one. Bad rows are reported and skipped.",
    )
    _model_options(score)
    score.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="raw data: any preference format, or prompt + completion(s) rows",
    )
    score.add_argument(
        "--format",
        default="auto",
        metavar="NAME|auto",
        help="format of the data (default: auto; 'completions' for prompt + completion rows)",
    )
    score.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an adapter option")
    score.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="the output file")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.set_defaults(func=run_score)

    serve = subparsers.add_parser(
        "serve",
        help="serve a trained reward model over HTTP (/score, OpenRLHF /get_reward, /classify)",
        description="A reward server: POST /score, POST /get_reward (OpenRLHF), POST /classify (vLLM shape), "
        "GET /health. Concurrent requests share forwards (dynamic batching).",
    )
    _model_options(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set)",
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        default=256,
        metavar="N",
        help="most items per shared forward batch (1: no dynamic batching; default 256)",
    )
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="how long a batch waits for more requests (default 5)",
    )
    serve.add_argument(
        "--max-items", type=int, default=512, metavar="N", help="most items per request (default 512)"
    )
    serve.add_argument(
        "--max-item-tokens", type=int, default=8192, metavar="N", help="most tokens per item (default 8192)"
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=16 * 2**20,
        metavar="N",
        help="largest request body (default 16 MiB)",
    )
    serve.set_defaults(func=run_serve)


def load_scorer(args: argparse.Namespace):
    """The :class:`~.scorer.RewardScorer` the options describe."""
    from .scorer import RewardScorer

    return RewardScorer.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        normalize=not args.raw,
        token_budget=args.token_budget,
        max_length=args.max_length,
        chat_template=args.chat_template,
    )


def run_score(args: argparse.Namespace) -> int:
    import sys

    from dataset_formats.commands import parse_options

    from .score_command import score_file

    counts = score_file(
        load_scorer(args),
        args.data,
        args.output,
        format=args.format,
        options=parse_options(args.option),
        progress=not args.no_progress,
    )
    print(
        f"scored {counts['responses']} responses of {counts['scored']} rows into {args.output}; "
        f"{counts['errors']} of {counts['rows']} rows had errors (see above)",
        file=sys.stdout,
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from ..logs import configure_logging
    from .server import ServerLimits, serve

    configure_logging()  # the server's own lines (address, drain account) next to uvicorn's
    limits = ServerLimits(
        max_items=args.max_items,
        max_item_tokens=args.max_item_tokens,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    name = os.path.basename(os.path.normpath(args.model))
    return serve(
        load_scorer(args), host=args.host, port=args.port, api_key=api_key, limits=limits, model_name=name
    )
