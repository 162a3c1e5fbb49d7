# Sourced by scripts/demo and scripts/test: make .venv and install lakelet with
# the extras given as $1, skipping pip when pyproject.toml has not changed since
# the last install (a second run costs well under a second).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
EXTRAS="$1"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: lakelet needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

stamp="$VENV/.lakelet-installed"
want="$(cat "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1) [$EXTRAS]"
if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$REPO[$EXTRAS]"
    echo "$want" > "$stamp"
fi
