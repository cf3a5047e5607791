#!/usr/bin/env bash
# Fetches the tools the test suite and the code generation need into .tools/ (ignored by git), only when
# missing or when their pinned version changed. Idempotent and quiet when everything is present; `npm test`
# runs it as its pretest step, the generate scripts run the parts they need.
#
#   ensure-tools.sh [component...]     no component: all of them
#     grpcurl      (tests)       grpcurl, built with `go install` through the Go module proxy
#     python       (tests, generation)  venv .tools/python with the client's pins and grpcio-tools from PyPI,
#                  and .tools/python-wheels: those wheels (and the build backend) for the install test's
#                  fresh venvs (test/clients-install.test.ts), so they install without the network
#     go-modules   (tests)       the modules of the Go client (clients/go), so its test build is offline
#     go-plugins   (generation)  protoc-gen-go and protoc-gen-go-grpc, `go install`ed into .tools/bin
#     hazelcast    (tests)       the Hazelcast member jar in .hazelcast/, from Maven Central
#     interop-go     (tests)     the modules of the Go JWKS/JOSE interop program (test/interop/go)
#     interop-python (tests)     venv .tools/interop-python with PyJWT and jwcrypto (test/interop/python)
#     chromium     (tests)       Debian's chromium for the browser test page's test, with apt-get
#     jq           (tests)       jq, which the README's runnable walkthroughs use (test/install.test.ts), with apt-get
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.4
# Go code generation (clients/go): the plugin versions decide the generated code, so they are pinned here.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
# Python client (clients/python): runtime pins in clients/python/requirements.txt; grpcio-tools generates.
GRPCIO_TOOLS_VERSION=1.85.1
# The build backend of clients/python (pyproject.toml asks for setuptools>=77), for offline `pip install`.
SETUPTOOLS_VERSION=84.2.1

TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "ensure-tools: Go is needed for $1; install Go 1.25+ (clients/go asks for it) and retry" >&2
    exit 1
  fi
}

# go-installed tools report no version, so a stamp file next to each records which one was built.
go_tool() { # name package version
  local name=$1 pkg=$2 version=$3
  if [ ! -x "$TOOLS/bin/$name" ] || [ "$(cat "$TOOLS/bin/$name.version" 2>/dev/null)" != "$version" ]; then
    need_go "$name (go install)"
    echo "ensure-tools: installing $name $version into .tools/bin" >&2
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install "$pkg@$version"
    echo "$version" > "$TOOLS/bin/$name.version"
  fi
}

ensure_grpcurl() {
  go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
}

ensure_go_plugins() {
  go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
  go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
}

ensure_go_modules() {
  need_go "the Go client"
  # Fast when the module cache has them; go.sum (committed) pins every module.
  (cd clients/go && go mod download)
  # A new module that uses the client (the README's `replace` recipe, which test/clients-install.test.ts
  # follows offline) needs more: `go mod tidy` also reads the modules that tests of the client's dependencies
  # import. Doing that recipe once here puts them in the module cache.
  local root=$PWD tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init example.com/warm >/dev/null 2>&1 \
    && go mod edit -replace "github.com/sts-project/sts/clients/go=$root/clients/go" \
    && cp "$root/clients/go/example/main.go" . && go mod tidy >/dev/null 2>&1) \
    || { rm -rf "$tmp"; echo "ensure-tools: go mod tidy of a module using clients/go failed" >&2; exit 1; }
  rm -rf "$tmp"
}

# A venv in .tools/NAME with pinned packages: venv NAME what requirements-file stamp [extra pip requirement...]
venv() {
  local name=$1 what=$2 requirements=$3 stamp=$4 venv="$TOOLS/$1" python
  shift 4
  python=$(command -v python3 || command -v python || true)
  if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "ensure-tools: Python 3.10+ (python3) is needed for $what; install it and retry" >&2
    exit 1
  fi
  # The stamp names the interpreter version and every pin, so changing either rebuilds the venv.
  local want
  want="$("$python" -c 'import sys; print("python=%d.%d.%d" % sys.version_info[:3])') $stamp $(grep -v '^#' "$requirements" | tr '\n' ' ' | sed 's/ *$//')"
  want="${want//  / }"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "ensure-tools: creating .tools/$name ($want)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements" "$@"
  echo "$want" > "$venv/stamp"
}

ensure_python() {
  venv python "the Python client" clients/python/requirements.txt "grpcio-tools=$GRPCIO_TOOLS_VERSION" "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  # The client's pins as wheels, with its build backend, for the fresh venvs of test/clients-install.test.ts:
  # `pip install clients/python` there needs no network.
  local wheels="$TOOLS/python-wheels" want
  want="$(cat "$TOOLS/python/stamp") setuptools=$SETUPTOOLS_VERSION"
  if [ "$(cat "$wheels/stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$wheels"
    "$TOOLS/python/bin/python" -m pip download --quiet --disable-pip-version-check --no-input --dest "$wheels" \
      -r clients/python/requirements.txt "setuptools==$SETUPTOOLS_VERSION"
    echo "$want" > "$wheels/stamp"
  fi
}

ensure_interop_python() {
  # Standard Python JWT/JOSE libraries against STS's HTTP JWKS (test/interop.test.ts); pins in the file.
  venv interop-python "the Python interop test" test/interop/python/requirements.txt ''
}

ensure_interop_go() {
  need_go "the Go interop test"
  (cd test/interop/go && go mod download)
}

ensure_chromium() {
  # Debian's chromium, driven by playwright-core in test/test-page.test.ts (playwright's own browser
  # downloads are not used). Quiet when present.
  if [ -x /usr/bin/chromium ]; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: /usr/bin/chromium is needed for the browser test page's test; install Debian's chromium package (apt-get install chromium) and retry" >&2
    exit 1
  fi
  echo "ensure-tools: installing chromium with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

ensure_jq() {
  command -v jq >/dev/null 2>&1 && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: jq is needed for the README's walkthroughs (test/install.test.ts); install it (apt-get install jq) and retry" >&2
    exit 1
  fi
  echo "ensure-tools: installing jq with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >/dev/null
}

ensure_hazelcast() {
  # The Hazelcast member jar, for the cluster-mode tests (Maven Central).
  bash scripts/hazelcast.sh fetch
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(grpcurl python go-modules go-plugins hazelcast interop-go interop-python chromium jq)
for c in "${components[@]}"; do
  case "$c" in
    grpcurl) ensure_grpcurl ;;
    python) ensure_python ;;
    go-modules) ensure_go_modules ;;
    go-plugins) ensure_go_plugins ;;
    hazelcast) ensure_hazelcast ;;
    interop-go) ensure_interop_go ;;
    interop-python) ensure_interop_python ;;
    chromium) ensure_chromium ;;
    jq) ensure_jq ;;
    *) echo "ensure-tools: unknown component '$c' (grpcurl, python, go-modules, go-plugins, hazelcast, interop-go, interop-python, chromium, jq)" >&2; exit 64 ;;
  esac
done
