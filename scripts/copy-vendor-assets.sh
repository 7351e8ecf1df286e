#!/bin/sh
# Copy the front-end files pages use from node_modules (npm registry) into static/vendor; node_modules is never served.
set -eu
cd "$(dirname "$0")/.."
V=static/vendor
rm -rf "$V"
mkdir -p "$V/socket.io" "$V/chart.js" "$V/mermaid" "$V/katex" "$V/codemirror/mode/javascript" "$V/swagger-ui"
cp node_modules/socket.io-client/dist/socket.io.min.js "$V/socket.io/"
cp node_modules/chart.js/dist/chart.umd.min.js "$V/chart.js/"
cp node_modules/mermaid/dist/mermaid.min.js "$V/mermaid/"
cp -r node_modules/katex/dist/katex.min.js node_modules/katex/dist/katex.min.css node_modules/katex/dist/fonts "$V/katex/"
cp node_modules/codemirror/lib/codemirror.js node_modules/codemirror/lib/codemirror.css "$V/codemirror/"
cp node_modules/codemirror/mode/javascript/javascript.js "$V/codemirror/mode/javascript/"  # the console's JSON mode
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css "$V/swagger-ui/"
touch "$V/.stamp"
