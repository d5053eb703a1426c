#!/bin/sh
# Runs one libFuzzer target for a few seconds over a copy of its seed corpus
# (the repository's corpus is never written). Crash inputs are kept in
# ARTIFACTS for reproduction: run the target with the file as its argument.
# usage: run_fuzzer.sh TARGET CORPUS SECONDS ARTIFACTS
set -eu
target=$1 corpus=$2 seconds=$3 artifacts=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus"/. "$work"/
mkdir -p "$artifacts"
status=0
"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=20000 \
	-print_final_stats=1 -artifact_prefix="$artifacts/$(basename "$target")-" "$work" || status=$?
exit "$status"
