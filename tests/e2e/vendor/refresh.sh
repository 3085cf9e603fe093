#!/usr/bin/env bash
# Refresh the JavaScript the browser tests inject (nothing is downloaded at test time):
# axe-core, pinned below, from npm with its licence (MPL-2.0), into tests/e2e/vendor/axe-core/.
# Usage: bash tests/e2e/vendor/refresh.sh [VERSION]   (then commit what changed)
set -euo pipefail
VERSION="${1:-4.14.1}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "axe-core@$VERSION" >/dev/null)
tar -xzf "$work/axe-core-$VERSION.tgz" -C "$work"
mkdir -p "$here/axe-core"
cp "$work/package/axe.min.js" "$work/package/LICENSE" "$here/axe-core/"
echo "$VERSION" >"$here/axe-core/VERSION"
echo "axe-core $VERSION -> $here/axe-core"
