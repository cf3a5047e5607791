#!/usr/bin/env bash
# Generates the Go client's stubs from proto/ into clients/go/stsv1/ with the pinned local plugins
# protoc-gen-go and protoc-gen-go-grpc (scripts/ensure-tools.sh installs them into .tools/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-tools.sh go-plugins
rm -rf clients/go/stsv1
"${BUF:-node_modules/.bin/buf}" generate --template buf.gen.go.yaml
