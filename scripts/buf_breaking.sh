#!/usr/bin/env bash
# buf breaking (FILE rules): on a branch, against main; on main, against the
# previous commit, so every landed change is checked against the one before.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo "")
if [ "$branch" != "main" ] && git rev-parse --verify --quiet main >/dev/null; then
  against=".git#branch=main"
elif git rev-parse --verify --quiet HEAD~1 >/dev/null; then
  against=".git#ref=HEAD~1"
else
  echo "buf breaking: no earlier revision to compare with; skipped"
  exit 0
fi
if git ls-tree -d --name-only "${against##*=}" proto >/dev/null 2>&1 &&
   [ -n "$(git ls-tree -d --name-only "${against##*=}" proto 2>/dev/null)" ]; then
  "$BUF" breaking --against "$against"
  echo "buf breaking: no breaking change against $against"
else
  echo "buf breaking: $against has no proto/ yet; skipped"
fi
