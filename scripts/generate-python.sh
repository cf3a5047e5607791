#!/usr/bin/env bash
# Generates the Python client's stubs from proto/ with grpcio-tools (pinned in scripts/ensure-tools.sh):
# messages (*_pb2.py), type stubs (*_pb2.pyi) and gRPC stubs (*_pb2_grpc.py) into
# clients/python/sts_client/v1/, inside the client's own package: installing it adds no bare top-level `sts`.
# protoc names imports after the proto path (`from sts.v1 import common_pb2`) and has no option to prefix
# them, so this script rewrites that one prefix to `sts_client.v1` (and the module names the descriptors are
# built for); the proto file names inside the descriptors stay `sts/v1/*.proto`, as the server's.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-tools.sh python
PKG=clients/python/sts_client
OUT="$PKG/v1"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# grpc_tools.protoc run as a module adds its bundled google/protobuf/*.proto to the include path.
.tools/python/bin/python -m grpc_tools.protoc -Iproto \
  --python_out="$TMP" --pyi_out="$TMP" --grpc_python_out="$TMP" \
  $(cd proto && LC_ALL=C ls sts/v1/*.proto)
rm -rf "$OUT"
mkdir -p "$OUT"
for f in "$TMP"/sts/v1/*; do
  sed -e 's/^from sts\.v1 import /from sts_client.v1 import /' \
      -e "s/BuildTopDescriptorsAndMessages(DESCRIPTOR, 'sts\.v1\./BuildTopDescriptorsAndMessages(DESCRIPTOR, 'sts_client.v1./" \
      "$f" > "$OUT/$(basename "$f")"
done
printf '%s\n' '"""Generated from proto/sts/v1 by scripts/generate-python.sh (grpcio-tools). Do not edit."""' > "$OUT/__init__.py"
if grep -rn '^from sts\.\|^import sts\.' "$OUT"; then
  echo "generate-python: an import of the bare sts package is left in $OUT" >&2
  exit 1
fi
