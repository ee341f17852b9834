#!/usr/bin/env bash
# Rewrites requirements/constraints.txt from what .venv has installed.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions of every package the project and its tests install (pip -c)."
  echo "# Regenerate after a change with: make freeze"
  .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^-e ' | grep -v ' @ '
} > requirements/constraints.txt
