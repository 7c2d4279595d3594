#!/usr/bin/env bash
# The project's one entry point on a fresh Debian 12 machine (as root):
#
#   ./build.sh run    install the Debian packages, build, check the example
#                     configuration, decide the example requests, and start
#                     tameflared in the foreground on it (Ctrl-C stops it)
#   ./build.sh test   install the Debian packages, build, and run every test:
#                     unit and command-line tests, lint (clang-format and
#                     clang-tidy), a benchmark smoke run, the fuzzers for a
#                     short while, and the unit tests again under ASan+UBSan
#   ./build.sh deps   only install the Debian packages
#   ./build.sh bench-peers [ARGS...]
#                     install Squid, mitmproxy, tinyproxy and nginx from Debian,
#                     build Release, and measure tameflared side by side with
#                     them (bench/peers/compare.py ARGS; docs/performance.md)
#
# Environment: JOBS (parallel jobs, default: nproc), TF_FUZZ_SECONDS (per
# fuzzer in `test`, default 30).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

PACKAGES=(
  build-essential cmake ninja-build pkg-config   # the toolchain
  nlohmann-json3-dev libre2-dev                  # policy/: JSON, linear-time regular expressions
  libssl-dev                                     # daemon/proxy/: TLS (ClientHello sniffing, interception)
  libsqlite3-dev                                 # daemon/store/: traffic log, audit chain, vault, runtime state
  libboost-dev                                   # daemon/proxy/: Asio runs the proxy, Beast parses HTTP
  libgtest-dev libgmock-dev libbenchmark-dev     # tests and benchmarks
  curl python3                                    # real clients in the proxy tests (curl, urllib)
  clang libclang-rt-14-dev                       # libFuzzer targets
  clang-format clang-tidy                        # lint
  git                                            # lint reads the tracked file list; git over the proxy
  libbpf-dev bpftool                             # bpf/: loading, pinning, skeletons, vmlinux.h from the kernel's BTF
  libnl-3-dev libnl-route-3-dev                  # netns/: bringing up an agent namespace's loopback over netlink
  libldns-dev                                    # netns/: the DNS stub parses and builds packets with ldns
  liburing-dev                                   # tests: an agent's io_uring connect must be redirected too
  dnsutils procps util-linux                     # tests: dig against the DNS stub; pgrep; setpriv and unshare
  tmux                                           # tests: an agent must not get the user's tmux server to run anything
  python3-pip openssl                            # tests: the real pip installs through the pypi connector; test certificates
  openjdk-17-jdk-headless                        # tests: Java (java, keytool) trusts the interception through the PKCS#12 store
  libsystemd-dev                                 # daemon: sd-bus (dbus/), socket activation (sd_listen_fds)
  libacl1-dev                                    # daemon/api/: the role groups' ACL entries on the REST socket
  libseccomp-dev                                 # netns/: the agent's seccomp filter (no new user namespaces)
  dbus-daemon dbus-bin systemd                   # tests: a private dbus-daemon, dbus-send and busctl against it
  python3-dbus                                   # tests: a D-Bus client whose connection outlives its process
  dpkg-dev                                       # packaging: dpkg-shlibdeps computes the .deb's library Depends
  debootstrap debian-archive-keyring             # tests/e2e: the Debian 12 root the package is installed in (signed)
  systemd-container                              # tests/e2e: systemd-nspawn boots that root
)
# npm, for the test that installs through the npm connector: Debian's nodejs
# and npm where the machine has no Node.js of its own (a Node.js from
# elsewhere ships its own npm, and Debian's npm would conflict with it).
NODE_PACKAGES=(nodejs npm)
# Only for `bench-peers`: the peers tameflared is measured against, the
# upstream they all reach, and the chart.
PEER_PACKAGES=(
  squid-openssl mitmproxy tinyproxy    # the peers (Squid built with OpenSSL for ssl_bump)
  nginx-light                          # the loopback upstream (HTTP and HTTPS)
  gnuplot-nox fonts-dejavu-core        # the chart
  util-linux openssl                   # taskset, unshare; the test certificates
  iptables                             # Squid's transparent mode (nat REDIRECT of the load generator's cgroup)
)
JOBS=${JOBS:-$(nproc)}

log() { printf '\n==> %s\n' "$*"; }

install_deps() {  # [PACKAGE...] (default: PACKAGES)
  local missing=() package wanted=("$@")
  ((${#wanted[@]})) || wanted=("${PACKAGES[@]}")
  for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    return
  fi
  if [[ $(id -u) != 0 ]]; then
    echo "build.sh: installing ${missing[*]} needs root; run it as root or with sudo" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update
  # Packages that ship a service (squid, tinyproxy, nginx) must not start it:
  # the benchmark runs its own instances. policy-rc.d says so to invoke-rc.d
  # and deb-systemd-invoke; one that was already there is left alone.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  local status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || status=$?
  ((made_policy)) && rm -f "$policy"
  return "$status"
}

bench_peers() {
  install_deps "${PACKAGES[@]}" "${PEER_PACKAGES[@]}"   # one apt-get update for both
  log "building (Release)"
  configure_and_build build-bench -DCMAKE_BUILD_TYPE=Release -DTF_TESTS=OFF
  log "measuring tameflared, Squid, mitmproxy and tinyproxy side by side"
  python3 bench/peers/compare.py --build build-bench "$@"
}

configure_and_build() {  # DIR [cmake args...]
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  ninja -C "$dir" -j "$JOBS"
}

run_demo() {
  install_deps
  log "building"
  configure_and_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTF_BENCH=OFF
  local config=examples/tameflared.json
  log "checking the example configuration"
  ./build/daemon/tameflared --check-config -c "$config"
  for gateway in dev-bot payments-bot ci; do
    log "deciding examples/requests.txt on gateway $gateway"
    ./build/cli/tf policy test -c "$config" --gateway "$gateway" --requests examples/requests.txt
  done
  log "one request with its trace"
  ./build/cli/tf policy test -c "$config" --gateway payments-bot --body 'amount=25000&currency=usd' \
    'POST https://api.stripe.com/v1/transfers'
  log "starting tameflared in the foreground (SIGHUP reloads, Ctrl-C stops)"
  exec ./build/daemon/tameflared -c "$config"
}

lint() {
  log "clang-format"
  git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run -Werror
  log "clang-tidy"
  git ls-files 'common/*.cpp' 'policy/*.cpp' 'daemon/*.cpp' 'cli/*.cpp' 'bpf/*.cpp' 'netns/*.cpp' 'dbus/*.cpp' |
    xargs -P "$JOBS" -n 1 clang-tidy -p build --quiet 2>/dev/null
}

fuzz_smoke() {
  local seconds=${TF_FUZZ_SECONDS:-30}
  log "fuzzing each target for ${seconds} s"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DTF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  ninja -C build-fuzz -j "$JOBS" config_fuzz request_fuzz sniff_fuzz request_head_fuzz dns_fuzz ipc_fuzz
  local target work
  for target in config request sniff request_head dns ipc; do
    work=$(mktemp -d)
    mkdir "$work/corpus"
    cp tests/fuzz/corpus/"$target"/* "$work/corpus/"
    if ! ./build-fuzz/tests/fuzz/${target}_fuzz -max_total_time="$seconds" -max_len=8192 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1; then
      tail -n 80 "$work/log"
      echo "build.sh: ${target}_fuzz failed; the input is in $work (crash-*, leak-*, timeout-*)" >&2
      return 1
    fi
    printf '%s_fuzz: %s\n' "$target" "$(grep -E '^stat::number_of_executed_units' "$work/log")"
    rm -rf "$work"
  done
}

install_node() {
  command -v npm >/dev/null && command -v node >/dev/null && return
  install_deps "${NODE_PACKAGES[@]}"
}

run_tests() {
  install_deps
  install_node
  log "installing the SDKs the agent tests run (tests/sdk, from its lockfile)"
  npm ci --prefix tests/sdk --no-audit --no-fund --loglevel=error
  log "building"
  configure_and_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
  log "unit and command-line tests"
  ctest --test-dir build --output-on-failure -j "$JOBS"
  lint
  log "benchmark smoke run (figures are for the record, never asserted)"
  ./build/bench/policy_bench --benchmark_min_time=0.05
  ./build/bench/proxy_bench  # about 10 s: each benchmark sets its own MinTime
  ./build/bench/store_bench  # about 15 s: the writer's sustained rate and commit latency
  ./build/bench/launch_bench # about 3 s: tf run -- /bin/true in both isolations (root; skips otherwise)
  fuzz_smoke
  log "AddressSanitizer + UndefinedBehaviorSanitizer build"
  configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DTF_SANITIZE=ON -DTF_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j "$JOBS"
}

case "${1:-}" in
  run) run_demo ;;
  test) run_tests ;;
  deps) install_deps && install_node ;;
  bench-peers) shift && bench_peers "$@" ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
