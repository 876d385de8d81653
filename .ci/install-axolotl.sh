#!/usr/bin/env bash
# Install Axolotl 0.19.0 for the Axolotl end-to-end test (tests/test_axolotl_e2e.py) in its own
# virtual environment, .venv-axolotl: Axolotl pins transformers/datasets/peft/accelerate versions
# other than ours. Usage: bash .ci/install-axolotl.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:-.venv-axolotl}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)

python3 -m venv "$venv"
# The CPU build of torch lies on this disk; a plain `torch` requirement would pull a multi-GB CUDA
# build, so torch comes first and a constraint keeps it at this version for everything after.
"$venv/bin/pip" install -q torch==2.13.0
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"
PIP_CONSTRAINT="$constraints" "$venv/bin/pip" install -q axolotl==0.19.0
PIP_CONSTRAINT="$constraints" "$venv/bin/pip" install -q -e .

HF_HUB_OFFLINE=1 "$venv/bin/python" -W ignore -c "import axolotl, torch, reward_plugin.hosts.axolotl as p; \
print(f'axolotl {axolotl.__version__}, torch {torch.__version__}, plugin {p.PLUGIN_NAME}')"
echo "Axolotl venv $venv ready in $(( $(date +%s) - start )) s"
