#!/usr/bin/env bash
# Fetches the tools the test suite needs into .tools/ (ignored by git), only when missing:
#   - grpcurl, built with `go install` through the Go module proxy.
# Idempotent and quiet when everything is present; `npm test` runs it as its pretest step.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.4
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

# go-installed grpcurl reports no version, so a stamp file records which one was built.
if [ ! -x "$TOOLS/bin/grpcurl" ] || [ "$(cat "$TOOLS/bin/grpcurl.version" 2>/dev/null)" != "$GRPCURL_VERSION" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "ensure-tools: Go is needed to build grpcurl (go install); install Go 1.22+ and retry" >&2
    exit 1
  fi
  echo "ensure-tools: installing grpcurl $GRPCURL_VERSION into .tools/bin" >&2
  GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  echo "$GRPCURL_VERSION" > "$TOOLS/bin/grpcurl.version"
fi
