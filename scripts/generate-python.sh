#!/usr/bin/env bash
# Generates the Python client's stubs from proto/ with grpcio-tools (pinned in scripts/ensure-tools.sh):
# messages (*_pb2.py), type stubs (*_pb2.pyi) and gRPC stubs (*_pb2_grpc.py) into clients/python/sts/v1/.
# The output keeps the proto package path (sts/v1), so the generated `from sts.v1 import common_pb2` imports
# work as they are with clients/python on the import path: nothing is edited after generation.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-tools.sh python
OUT=clients/python
rm -rf "$OUT/sts"
# grpc_tools.protoc run as a module adds its bundled google/protobuf/*.proto to the include path.
.tools/python/bin/python -m grpc_tools.protoc -Iproto \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  $(cd proto && LC_ALL=C ls sts/v1/*.proto)
