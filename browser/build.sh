#!/bin/sh
# Build the benchmark's pages into dist/: `npm ci` (the frameworks pinned by
# package-lock.json) when node_modules is missing or older than the lock,
# then one esbuild bundle per app. `make browser` runs this only when a
# source changed; node_modules/ and dist/ are build outputs (gitignored).
set -eu
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm is missing (apt-get install -y nodejs npm)" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
version() { node -p "require('./node_modules/$1/package.json').version"; }
esbuild() { node_modules/.bin/esbuild --bundle --minify --format=iife --target=es2020 \
    --log-level=warning --define:process.env.NODE_ENV='"production"' "$@"; }
mkdir -p dist
esbuild apps/vanilla/app.js --outfile=dist/vanilla.js
esbuild apps/react/app.jsx --jsx=automatic --outfile=dist/react.js
esbuild apps/preact/app.jsx --jsx=automatic --jsx-import-source=preact \
    --define:FRAMEWORK_VERSION="\"$(version preact)\"" --outfile=dist/preact.js
# The full build of Vue, which compiles the apps' templates in the page.
esbuild apps/vue/app.js --alias:vue=vue/dist/vue.esm-bundler.js \
    --define:__VUE_OPTIONS_API__=true --define:__VUE_PROD_DEVTOOLS__=false \
    --define:__VUE_PROD_HYDRATION_MISMATCH_DETAILS__=false --outfile=dist/vue.js
esbuild apps/jquery/app.js --outfile=dist/jquery.js
esbuild apps/backbone/app.js --outfile=dist/backbone.js
touch dist/.built
