#!/bin/sh
# Generate the Python code and the commented descriptor set from protos/ (used by make and the Dockerfile).
# Usage: scripts/gen-protos.sh <python> <out-dir>
set -eu
PY=${1:-python3}
OUT=${2:-gen}
PROTOS=$(find protos -name '*.proto' | sort)
rm -rf "$OUT" && mkdir -p "$OUT"
# shellcheck disable=SC2086
"$PY" -m grpc_tools.protoc -Iprotos --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" $PROTOS
# The descriptor set keeps the proto comments, so reflection (grpcurl describe) can show them.
# shellcheck disable=SC2086
"$PY" -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
    --descriptor_set_out="$OUT/descriptors.binpb" $PROTOS
