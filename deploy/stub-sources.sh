#!/bin/sh
# The Dockerfile's dependency layer: with only Cargo.toml, Cargo.lock and the crates'
# manifests copied in, write an empty source file for every target the workspace has, so
# `cargo build --release --locked --bin fwdist` compiles every dependency and nothing of
# ours. The layer is then reused until a manifest or the lock file changes.
#
# deploy/check.py runs this script the same way on the same files (in a scratch directory)
# and checks that cargo resolves that workspace offline with Cargo.lock unchanged: no
# container engine runs in CI, so that is the proof that this step works.
#
# Usage: deploy/stub-sources.sh [DIR]   (DIR: the workspace root, default .)
set -eu
cd "${1:-.}"
# The server package: a binary and its library.
mkdir -p src
echo 'fn main() {}' > src/main.rs
: > src/lib.rs
# Each workspace member under crates/ is a library.
for manifest in crates/*/Cargo.toml; do
  dir=${manifest%/Cargo.toml}
  mkdir -p "$dir/src"
  : > "$dir/src/lib.rs"
done
