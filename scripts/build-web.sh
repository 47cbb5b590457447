#!/usr/bin/env bash
# Builds Sotto's browser bundle (web/dist, which sotto-server embeds) from
# crates/web and web/src: cargo and wasm-bindgen, no Node.
#
#   scripts/build-web.sh            build into web/dist
#   scripts/build-web.sh --out DIR  build into DIR
#   scripts/build-web.sh --check    build into a temporary directory and fail
#                                   (exit 1) unless it equals web/dist
#
# Reproducible: the same commit gives the same bytes on every machine and in
# every directory (paths are remapped; the wasm profile has one codegen unit
# and full LTO; wasm-bindgen is the exact version in Cargo.lock). A different
# rustc may give a different wasm, so the build records `rustc --version` in
# web/TOOLCHAIN, and --check with another rustc fails saying so (rebuild and
# commit the bundle with the new toolchain) rather than as a mismatch.
#
# Needs: rustup's wasm32-unknown-unknown target and clang-19 (both installed
# when missing, see scripts/wasm-toolchain.sh), sha384sum, xxd, base64,
# gzip, diff (all on Debian by default but xxd, which is in the xxd package).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
dist=web/dist
check=false
out=""
while (($#)); do
    case $1 in
    --check) check=true ;;
    --out)
        out=${2:?--out needs a directory}
        shift
        ;;
    -h | --help)
        sed -n '2,17p' "$0"
        exit 0
        ;;
    *)
        echo "build-web.sh: unknown argument $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

for tool in sha384sum xxd base64 gzip diff; do
    command -v "$tool" >/dev/null || {
        echo "build-web.sh: $tool is missing (apt-get install coreutils xxd gzip diffutils)" >&2
        exit 2
    }
done

# The wasm32 target, and clang-19 for SQLite's C (installed when missing).
source scripts/wasm-toolchain.sh

toolchain=$(rustc --version)
if $check && [[ "$(cat web/TOOLCHAIN 2>/dev/null)" != "$toolchain" ]]; then
    echo "build-web.sh: web/dist was built with '$(cat web/TOOLCHAIN 2>/dev/null)', this is '$toolchain':" >&2
    echo "  a different compiler gives different bytes. Rebuild with scripts/build-web.sh and commit web/." >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The CLI must be the very version of the wasm-bindgen crate in Cargo.lock:
# the two agree on a private format.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ -n $bindgen_version ]] || {
    echo "build-web.sh: no wasm-bindgen in Cargo.lock" >&2
    exit 2
}
bindgen=$(command -v wasm-bindgen || true)
if [[ -z $bindgen || "$("$bindgen" --version)" != "wasm-bindgen $bindgen_version" ]]; then
    echo "build-web.sh: installing wasm-bindgen-cli $bindgen_version" >&2
    # --locked when the registry still has every crate of the CLI's own
    # lock file; some mirrors lack a newer patch release, then resolve anew.
    cargo install --locked --version "=$bindgen_version" wasm-bindgen-cli ||
        cargo install --version "=$bindgen_version" wasm-bindgen-cli
    bindgen=${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen
fi

# Paths that would otherwise end up in the wasm (panic locations): this
# clone, the registry sources, the standard library. Encoded flags (0x1f
# between them) so that a path may hold spaces.
cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
sysroot=$(rustc --print sysroot)
sep=$'\x1f'
# The target directory last (the last matching prefix wins): generated code
# (sotto-proto's) is included from it, wherever it is.
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target"
target=$(cd "$target" && pwd -P)
export CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=$(pwd -P)=/sotto${sep}--remap-path-prefix=$cargo_home=/cargo${sep}--remap-path-prefix=$sysroot=/rust${sep}--remap-path-prefix=$target=/target"
unset RUSTFLAGS
# The flags apply to the wasm target only (not to build scripts), whose
# artifacts in the `web` profile nothing else builds: the workspace's
# target directory serves, without rebuilding anything else.
cargo build --locked --profile web --target wasm32-unknown-unknown -p sotto-web \
    --target-dir "$target"

"$bindgen" --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir "$work/bindgen" "$target/wasm32-unknown-unknown/web/sotto_web.wasm"

stage=$work/dist
mkdir -p "$stage"
cp "$work/bindgen/sotto_web.js" "$work/bindgen/sotto_web_bg.wasm" web/src/app.js web/src/style.css web/src/sw.js "$stage/"

# Subresource Integrity: sha384, base64.
sri() { printf 'sha384-%s' "$(sha384sum "$1" | cut -d' ' -f1 | xxd -r -p | base64 -w0)"; }
# index.html pins app.js and the stylesheet; the worker pins the wasm. A
# worker and its imports (worker.js, sotto_web.js) cannot be pinned by SRI:
# the transparency log's web release and `sotto audit` cover every file.
sed "s|@SOTTO_WEB_BG_WASM_SRI@|$(sri "$stage/sotto_web_bg.wasm")|" web/src/worker.js >"$stage/worker.js"
sed -e "s|@APP_JS_SRI@|$(sri "$stage/app.js")|" \
    -e "s|@STYLE_CSS_SRI@|$(sri "$stage/style.css")|" \
    web/src/index.html >"$stage/index.html"
if grep -n '@[A-Z_]*_SRI@' "$stage"/*.html "$stage"/*.js; then
    echo "build-web.sh: a placeholder above was not filled in" >&2
    exit 2
fi

printf '%-20s %9s %9s\n' file bytes gzip
for f in index.html app.js worker.js sw.js style.css sotto_web.js sotto_web_bg.wasm; do
    printf '%-20s %9d %9d\n' "$f" "$(wc -c <"$stage/$f")" "$(gzip -9 -n -c "$stage/$f" | wc -c)"
done

if $check; then
    if diff -r -q "$dist" "$stage"; then
        echo "build-web.sh: $dist matches a fresh build"
        exit 0
    fi
    echo "build-web.sh: $dist differs from a fresh build of this commit (above)." >&2
    echo "  Rebuild it with scripts/build-web.sh and commit web/dist." >&2
    for f in index.html app.js worker.js sw.js style.css sotto_web.js; do
        [[ -f $dist/$f ]] && diff -u "$dist/$f" "$stage/$f" | head -20 >&2 || true
    done
    exit 1
fi

out=${out:-$dist}
mkdir -p "$out"
rm -f "$out"/index.html "$out"/app.js "$out"/worker.js "$out"/sw.js "$out"/style.css "$out"/sotto_web.js "$out"/sotto_web_bg.wasm
cp "$stage"/* "$out/"
[[ $out == "$dist" ]] && echo "$toolchain" >web/TOOLCHAIN
echo "build-web.sh: wrote $out"
