# Sourced (not run) by .ci/install-axolotl.sh and .ci/install-minimums.sh: the preamble they share.
# Expects `venv` (the venv folder, relative to the checkout). Afterwards the working directory is
# the checkout, `$venv` is a new venv holding the CPU build of torch, `start` the start time (s),
# `torch_constraint` a pip constraints file pinning that torch, and `ci_tmp` a folder for
# temporary files; both are removed when the calling script exits.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
ci_tmp="$(mktemp -d)"
trap 'rm -rf "$ci_tmp"' EXIT

torch_version=2.13.0
python3 -m venv "$venv"
# torch first: the CPU build lies on this disk; a plain `torch` requirement would pull a multi-GB
# CUDA build, so a constraint keeps torch at this version for whatever is installed after it.
"$venv/bin/pip" install -q "torch==$torch_version"
torch_constraint="$ci_tmp/torch-constraint.txt"
echo "torch==$torch_version" > "$torch_constraint"
