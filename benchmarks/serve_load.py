"""The reward server under load: 32 concurrent clients x 20 requests, dynamic batching vs ``--max-batch 1``.

Each request scores one RM-Bench chat prompt's responses (``/score``, conversational, 6 completions).
Every answer is checked against the offline :class:`~reward_plugin.RewardScorer` on the same model;
the table gives requests and completions per second and the p50/p99 latency of each server setting,
side by side. Model: SmolLM2-135M's shape and tokenizer, random weights, ``--layers`` layers (see
``score_speed.py``), float32 on CPU.

    python benchmarks/serve_load.py
    python benchmarks/serve_load.py --clients 32 --requests 20 --layers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from score_speed import flatten, rm_bench_groups, smollm2_shaped, smollm2_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "reward_plugin",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(
        [*command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/health", timeout=2)
            return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("the server did not start")


async def load(
    url: str, bodies: list[dict], clients: int, per_client: int
) -> tuple[list[float], list[list[float]], float]:
    latencies: list[float] = []
    answers: list[list[float]] = [[] for _ in range(clients * per_client)]

    async def client(c: int, session: httpx.AsyncClient) -> None:
        for r in range(per_client):
            k = c * per_client + r
            start = time.perf_counter()
            response = await session.post(url + "/score", json=bodies[k % len(bodies)], timeout=600)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()
            answers[k] = response.json()["rewards"]

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, session) for c in range(clients)))
        wall = time.perf_counter() - start
    return latencies, answers, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    from reward_plugin import RewardScorer

    tokenizer = smollm2_tokenizer()
    model = smollm2_shaped(tokenizer, args.layers)
    groups = rm_bench_groups(args.prompts)
    bodies = []
    for prompt, responses in groups:
        prompts, completions = flatten([(prompt, responses)])
        bodies.append({"prompts": prompts, "completions": completions})
    offline = RewardScorer(model, tokenizer)
    expected = [offline(**b) for b in bodies]
    total = args.clients * args.requests
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for label, extra in (("dynamic batching (default)", []), ("--max-batch 1", ["--max-batch", "1"])):
            process, url = start(folder, *extra)
            try:
                latencies, answers, wall = asyncio.run(load(url, bodies, args.clients, args.requests))
                health = httpx.get(url + "/health").json()
            finally:
                process.send_signal(signal.SIGTERM)
                code = process.wait(timeout=120)
            diff = max(
                abs(a - b) for k, got in enumerate(answers) for a, b in zip(got, expected[k % len(bodies)])
            )
            answered = sum(1 for a in answers if a)
            rows.append((label, answered, wall, health["batches"], diff, code, latencies))
    print(
        f"model: SmolLM2-135M shape, {args.layers} layers, random weights, float32, CPU; {args.clients} clients x "
        f"{args.requests} requests, 6 completions each ({total} requests, {total * 6} completions)"
    )
    print()
    print(
        "| server | answered | shared batches | requests/s | completions/s | speed-up | p50 latency s | p99 latency s | max diff vs offline | exit code |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = rows[-1][2]
    for label, answered, wall, batches, diff, code, lat in rows:
        print(
            f"| {label} | {answered}/{total} | {batches} | {total / wall:.2f} | {6 * total / wall:.1f} | {base / wall:.2f}x | "
            f"{percentile(lat, 0.5):.2f} | {percentile(lat, 0.99):.2f} | {diff:.1e} | {code} |"
        )


if __name__ == "__main__":
    main()
