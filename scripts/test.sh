#!/usr/bin/env bash
# Runs every test of the solution after installing what the tests need (real peers: kubectl, qemu-utils,
# libnbd tools, fuse3, ...). Ends with one plain line: "N passed, N failed[, N skipped]".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh || { echo "installing test dependencies failed"; echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
dotnet build Dolly.slnx -c Release -nologo -clp:ErrorsOnly >"$log" 2>&1
if [ $? -ne 0 ]; then
  cat "$log"
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

: >"$log"
dotnet test --solution Dolly.slnx -c Release --no-build 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Microsoft.Testing.Platform prints a summary per run: total / failed / succeeded / skipped.
passed=$(grep -E '^\s+succeeded: [0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -E '^\s+failed: [0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
skipped=$(grep -E '^\s+skipped: [0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # The runner failed without reporting a failed test (crash, timeout, build problem): count it.
  failed=1
fi
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
