#!/usr/bin/env bash
# Proves the two install paths from a packed tarball, each in an empty folder:
#  1. `npm install <tarball>` loads prebuilds/linux-x64/ without compiling (no compiler on PATH);
#  2. `npm install --build-from-source <tarball>` builds with cmake-js into build/Release.
# Usage: scripts/prove-install.sh [tarball]  (packs the checkout when no tarball is given)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tarball=${1:-}
if [ -z "$tarball" ]; then
  echo "== npm pack (prebuildify builds the addon and the CUDA library)"
  (cd "$root" && npm pack --pack-destination "$work" >"$work/pack.log" 2>&1) || { tail -40 "$work/pack.log"; exit 1; }
  tarball=$(ls "$work"/versatile-ffn-*.tgz)
fi
tar -tzf "$tarball" >"$work/files"
grep -E '^package/prebuilds/' "$work/files" | sed 's/^/  in tarball: /'
grep -q '^package/prebuilds/linux-x64/versatile-ffn.node$' "$work/files" || { echo "no prebuilt addon in the tarball"; exit 1; }
# the shipped package.json runs nothing that needs the repository (no tsconfig.json is shipped)
tar -xzOf "$tarball" package/package.json | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
  const extra = Object.keys(JSON.parse(s).scripts || {}).filter((k) => /^(pre|post)?(prepare|install)$/.test(k) && k !== "install");
  if (extra.length) { console.error("the packed package.json has lifecycle scripts that cannot run there: " + extra.join(", ")); process.exit(1); } })'
! grep -q '^package/tsconfig.json$' "$work/files" || { echo "tsconfig.json is in the tarball"; exit 1; }

check='const v = require("versatile-ffn"); const path = require("path");
const file = require("node-gyp-build").path(path.dirname(require.resolve("versatile-ffn/package.json")));
v.matmul(v.tensor([[1, 2], [3, 4]]), v.tensor([[5], [6]])).data().then((d) => {
  if (d[0] !== 17 || d[1] !== 39) throw new Error("wrong result " + d);
  console.log("  loaded " + path.relative(process.cwd(), file) + "; cuda: " + (v.cuda.available() ? "available" : v.cuda.reason().slice(0, 60)));
});'

# npm 11 blocks dependency install scripts unless allowed; the prebuilt binary needs none
# npm 11 runs a dependency's install script only when package.json allows it (by name for the
# registry, by spec for a tarball: what `npm install-scripts approve` writes)
allow_scripts() {
  node -e 'const f="package.json", p=require("./"+f); p.allowScripts={["file:"+process.argv[1]]: true};
    require("fs").writeFileSync(f, JSON.stringify(p, null, 2))' "$tarball"
}

echo "== 1a. plain install from the tarball, no compiler on PATH (install scripts blocked by npm)"
mkdir -p "$work/bin" "$work/plain" "$work/prebuilt"
for tool in node npm npx sh env; do ln -s "$(command -v $tool)" "$work/bin/$tool"; done
(cd "$work/plain" && npm init -y >/dev/null &&
  PATH="$work/bin" npm install --no-audit --no-fund "$tarball" >"$work/install0.log" 2>&1) || { cat "$work/install0.log"; exit 1; }
[ ! -e "$work/plain/node_modules/versatile-ffn/build" ] || { echo "a build folder appeared: something was compiled"; exit 1; }
(cd "$work/plain" && node -e "$check" | tee "$work/load0.log")
grep -q "loaded node_modules/versatile-ffn/prebuilds/linux-x64/versatile-ffn.node" "$work/load0.log"

echo "== 1b. install with its install script allowed, no compiler on PATH: the script picks the prebuilt binary"
(cd "$work/prebuilt" && npm init -y >/dev/null && allow_scripts &&
  PATH="$work/bin" npm install --no-audit --no-fund --foreground-scripts "$tarball" >"$work/install1.log" 2>&1) || { cat "$work/install1.log"; exit 1; }
grep -q "versatile-ffn: using prebuilds/linux-x64/versatile-ffn.node" "$work/install1.log" || { cat "$work/install1.log"; echo "the prebuilt binary was not used"; exit 1; }
[ ! -e "$work/prebuilt/node_modules/versatile-ffn/build" ] || { echo "a build folder appeared: something was compiled"; exit 1; }
(cd "$work/prebuilt" && node -e "$check" | tee "$work/load1.log")
grep -q "loaded node_modules/versatile-ffn/prebuilds/linux-x64/versatile-ffn.node" "$work/load1.log"

echo "== 2. npm install --build-from-source builds with cmake-js"
mkdir -p "$work/source"
(cd "$work/source" && npm init -y >/dev/null && allow_scripts &&
  npm install --no-audit --no-fund --foreground-scripts --build-from-source "$tarball" >"$work/install2.log" 2>&1) || { tail -40 "$work/install2.log"; exit 1; }
grep -q "building from source as asked (cmake-js)" "$work/install2.log" || { tail -40 "$work/install2.log"; exit 1; }
(cd "$work/source" && node -e "$check" | tee "$work/load2.log")
grep -q "loaded node_modules/versatile-ffn/build/Release/versatile_ffn.node" "$work/load2.log"
echo "install paths proven"
