#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for SECONDS (default 300), one after another,
# then prints per target: execs, exec/s, corpus size, crashes (README "Fuzzing").
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Stable toolchain: cargo-fuzz needs -Z flags, so RUSTC_BOOTSTRAP=1. No sanitizer
# (`--sanitizer none`): the code is Rust with `unsafe_code = "forbid"`, so a bug shows as a
# panic or a failed check, which libFuzzer catches without ASan, at several times the speed.
# The build has debug assertions (overflow checks) on, as `cargo fuzz build` does.
#
# Each run starts from the committed seeds (fuzz/corpus/<target>, never written) plus what
# earlier runs grew in fuzz/corpus-run/<target> (git-ignored); crashes land in
# fuzz/artifacts/<target>/, logs in fuzz/artifacts/logs/. Exit status 1 if any target crashed.
# FWDIST_FUZZ_TARGET_DIR moves the build (default fuzz/target, apart from the main build).
# FWDIST_FUZZ_DEV=1 builds unoptimised (`cargo fuzz build --dev`): a far shorter build and
# slower execs, for CI's short runs; long runs want the default optimised build.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FWDIST_FUZZ_TARGET_DIR:-$PWD/target}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

profile=release
build=(cargo fuzz build --sanitizer none)
if [ "${FWDIST_FUZZ_DEV:-}" = 1 ]; then
  profile=debug
  build+=(--dev)
fi
"${build[@]}"
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=$CARGO_TARGET_DIR/$triple/$profile
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

mkdir -p artifacts/logs
results=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus-run/$t" "artifacts/$t"
  # ClientHellos up to the 16 KiB + 5 record cap and past it; everything else is small.
  max_len=4096
  [ "$t" = oneport ] && max_len=17000
  log=artifacts/logs/$t.log
  before=$(find "artifacts/$t" -type f | wc -l)
  rc=0
  "$bin/$t" "corpus-run/$t" "corpus/$t" -max_total_time="$secs" -max_len="$max_len" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "corpus-run/$t" "corpus/$t" -type f -printf '%f\n' | sort -u | wc -l)
  crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "== $t: exit $rc, $crashes new artifact(s); the end of $log:" >&2
    tail -30 "$log" >&2
  fi
  results+=("$(printf '%-12s %6ss %12s %9s %7s %8s' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes")")
done

printf '%-12s %7s %12s %9s %7s %8s\n' target time execs exec/s corpus crashes
printf '%s\n' "${results[@]}"
exit "$failed"
