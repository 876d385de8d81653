#!/usr/bin/env bash
# Install Axolotl 0.19.0 for the Axolotl end-to-end test (tests/test_axolotl_e2e.py) in its own
# virtual environment, .venv-axolotl: Axolotl pins transformers/datasets/peft/accelerate versions
# other than ours. Usage: bash .ci/install-axolotl.sh [VENV_DIR]
set -euo pipefail

venv="${1:-.venv-axolotl}"
# The venv with torch, in the checkout (see the file).
# shellcheck source=.ci/venv-torch.sh
. "$(dirname "$0")/venv-torch.sh"

PIP_CONSTRAINT="$torch_constraint" "$venv/bin/pip" install -q axolotl==0.19.0
PIP_CONSTRAINT="$torch_constraint" "$venv/bin/pip" install -q -e .

HF_HUB_OFFLINE=1 "$venv/bin/python" -W ignore -c "import axolotl, torch, reward_plugin.hosts.axolotl as p; \
print(f'axolotl {axolotl.__version__}, torch {torch.__version__}, plugin {p.PLUGIN_NAME}')"
echo "Axolotl venv $venv ready in $(( $(date +%s) - start )) s"
