#!/bin/sh
# Generate the Python code and the commented descriptor set from protos/ (used by make and the Dockerfile).
# Usage: scripts/gen-protos.sh <python> <out-dir> [--no-stubs]
# --no-stubs leaves out the .pyi type stubs, for an interpreter without mypy-protobuf: the Docker image
# runs the code and installs only the runtime dependencies.
set -eu
PY=${1:-python3}
OUT=${2:-gen}
STUBS=${3:-}
PROTOS=$(find protos -name '*.proto' | sort)
rm -rf "$OUT" && mkdir -p "$OUT"
# shellcheck disable=SC2086
"$PY" -m grpc_tools.protoc -Iprotos --python_out="$OUT" --grpc_python_out="$OUT" $PROTOS
if [ "$STUBS" != "--no-stubs" ]; then
    # The .pyi stubs come from mypy-protobuf: messages, enums, and the gRPC stubs and servicers, all typed.
    # Its plugins are installed beside the interpreter, which need not be on PATH.
    BIN=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    # shellcheck disable=SC2086
    "$PY" -m grpc_tools.protoc -Iprotos \
        --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" --mypy_out=quiet:"$OUT" \
        --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" --mypy_grpc_out=quiet:"$OUT" $PROTOS
fi
# The descriptor set keeps the proto comments, so reflection (grpcurl describe) can show them.
# shellcheck disable=SC2086
"$PY" -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
    --descriptor_set_out="$OUT/descriptors.binpb" $PROTOS
