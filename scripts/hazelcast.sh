#!/usr/bin/env bash
# Hazelcast member for STS cluster mode (open-source member, run with the machine's Java 17+).
#   scripts/hazelcast.sh fetch                 download the member jar into .hazelcast/ (Maven Central)
#   scripts/hazelcast.sh start [PORT] [MEMBERS] [CLUSTER]
#                                              run one member in the foreground on 127.0.0.1:PORT
#                                              (default 5701; MEMBERS default "127.0.0.1:5701"; CLUSTER "sts")
#   scripts/hazelcast.sh java-command PORT MEMBERS CLUSTER
#                                              print the java command line (the test harness uses it)
# HZ_HEAP: the member's maximum heap (java -Xmx), default 384m; `npm run bench -- --cluster --scale` uses more
# for a million sessions.
# HZ_INTERFACE: the one interface (IP address) the member binds to and advertises, default 127.0.0.1. On several
# hosts, give each member its host's address on the private member network, and list every member in MEMBERS.
set -euo pipefail
cd "$(dirname "$0")/.."

HZ_VERSION=5.6.0
HZ_HEAP="${HZ_HEAP:-384m}"
HZ_INTERFACE="${HZ_INTERFACE:-127.0.0.1}"
[[ "$HZ_INTERFACE" =~ ^[0-9.]+$|^[0-9a-fA-F:]+$ ]] || { echo "hazelcast: HZ_INTERFACE must be an IP address, not \"$HZ_INTERFACE\"" >&2; exit 2; }
[[ "$HZ_HEAP" =~ ^[0-9]+[mg]$ ]] || { echo "hazelcast: HZ_HEAP must look like 384m or 2g, not \"$HZ_HEAP\"" >&2; exit 2; }
JAR=".hazelcast/hazelcast-$HZ_VERSION.jar"

fetch() {
  if [ -f "$JAR" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "hazelcast: Maven (mvn) is needed to fetch the member jar" >&2; exit 1; }
  echo "hazelcast: fetching com.hazelcast:hazelcast:$HZ_VERSION into .hazelcast/" >&2
  # The pinned plugin: a bare dependency:copy resolves an old plugin that needs a pom.xml.
  mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="com.hazelcast:hazelcast:$HZ_VERSION" -DoutputDirectory=.hazelcast
  [ -f "$JAR" ] || { echo "hazelcast: $JAR was not fetched" >&2; exit 1; }
}

java_command() {
  local port=$1 members=$2 cluster=$3
  printf '%s\n' java -Xms64m "-Xmx$HZ_HEAP" \
    --add-modules java.se --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED \
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED --add-opens java.management/sun.management=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    -Djava.net.preferIPv4Stack=true -Dhazelcast.phone.home.enabled=false \
    "-Dhazelcast.config=$PWD/hazelcast/hazelcast.yaml" "-Dhz.cluster=$cluster" "-Dhz.port=$port" "-Dhz.members=$members" "-Dhz.interface=$HZ_INTERFACE" \
    -cp "$PWD/$JAR" com.hazelcast.core.server.HazelcastMemberStarter
}

case "${1:-start}" in
  fetch) fetch ;;
  java-command) java_command "$2" "$3" "$4" ;;
  start)
    fetch
    port=${2:-5701}
    mapfile -t cmd < <(java_command "$port" "${3:-127.0.0.1:$port}" "${4:-sts}")
    # The member reads every HZ_* environment variable as a configuration override (HZ_INTERFACE would become
    # hazelcast.interface and conflict with the file); this script has turned them into system properties.
    unset HZ_INTERFACE HZ_HEAP
    exec "${cmd[@]}"
    ;;
  *) echo "usage: scripts/hazelcast.sh fetch | start [PORT] [MEMBERS] [CLUSTER]" >&2; exit 64 ;;
esac
