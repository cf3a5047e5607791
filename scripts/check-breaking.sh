#!/usr/bin/env bash
# Contract safety: `buf breaking` (rules FILE, buf.yaml) compares proto/ at HEAD with the previous commit, so a
# change that would break deployed clients (a removed or renumbered field, a renamed RPC...) fails CI.
#
#   scripts/check-breaking.sh [AGAINST]     AGAINST: a commit (default HEAD~1, the previous commit of main)
#
# A deliberate break is accepted only when the same change notes it in CHANGELOG.md, under "## Unreleased",
# with a line that starts with the marker below, followed by what breaks and what clients must do:
#
#   - Breaking contract change: ...
#
# The check counts those lines in CHANGELOG.md at HEAD and at AGAINST: a break passes only when HEAD has more
# (the note came with the break); an old note never waves a later break through.
# The previous commit is read with `git archive`, so the check needs its objects: in a shallow clone it
# deepens the clone by one commit first (`git fetch --deepen=1`) and fails if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

MARKER='- Breaking contract change:'
AGAINST="${1:-HEAD~1}"
BUF="${BUF:-node_modules/.bin/buf}"

if ! git rev-parse --verify --quiet "$AGAINST^{commit}" >/dev/null; then
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "check-breaking: $AGAINST is not in this shallow clone; fetching one more commit" >&2
    git fetch --quiet --deepen=1 || true
  fi
  if ! git rev-parse --verify --quiet "$AGAINST^{commit}" >/dev/null; then
    if [ "$AGAINST" = "HEAD~1" ] && [ -z "$(git rev-list --max-count=1 --parents HEAD | cut -s -d' ' -f2)" ] && [ "$(git rev-parse --is-shallow-repository)" = false ]; then
      echo "check-breaking: HEAD is the first commit: nothing to compare with"
      exit 0
    fi
    echo "check-breaking: cannot read $AGAINST (a shallow clone whose remote is unreachable?): clone with more history" >&2
    exit 1
  fi
fi
against=$(git rev-parse "$AGAINST^{commit}")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! git cat-file -e "$against:proto" 2>/dev/null; then
  echo "check-breaking: $against has no proto/: nothing to compare with"
  exit 0
fi
git archive "$against" buf.yaml proto | tar -x -C "$tmp"

notes() { grep -c "^$MARKER" || true; }
if "$BUF" breaking --against "$tmp" > "$tmp/report" 2>&1; then
  echo "check-breaking: proto/ is wire- and source-compatible with ${against:0:12}"
  exit 0
fi
before=$( (git show "$against:CHANGELOG.md" 2>/dev/null || true) | notes)
after=$( (cat CHANGELOG.md 2>/dev/null || true) | notes)
cat "$tmp/report" >&2
if [ "${after:-0}" -gt "${before:-0}" ]; then
  echo "check-breaking: the breaking changes above are deliberate: CHANGELOG.md notes them ('$MARKER')"
  exit 0
fi
echo "check-breaking: proto/ breaks clients of ${against:0:12} (above). Keep the old fields and RPCs (add, do not" >&2
echo "renumber or rename); or, if the break is deliberate, note it in CHANGELOG.md under '## Unreleased' with a" >&2
echo "line starting '$MARKER' that says what breaks and what clients must do." >&2
exit 1
