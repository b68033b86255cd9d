#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft) on loopback, from jars fetched by Maven.
#
#   scripts/kafka-local.sh up      fetch jars if needed, format storage once, start, wait until it answers
#   scripts/kafka-local.sh down    stop the broker cleanly (SIGTERM, then wait)
#   scripts/kafka-local.sh status  say whether it runs and where
#
# Settings (environment): KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (default KAFKA_PORT+1),
# KAFKA_DIR (state: data, log, pid; default .tickstream/kafka-$KAFKA_PORT), KAFKA_HEAP (default 512m),
# KAFKA_START_TIMEOUT seconds (default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
STATE="${KAFKA_DIR:-$ROOT/.tickstream/kafka-$PORT}"
LIBS="${KAFKA_LIBS:-$ROOT/.cache/kafka/libs}"
HEAP="${KAFKA_HEAP:-512m}"
TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
PIDFILE="$STATE/broker.pid"
LOG="$STATE/broker.log"

say() { echo "kafka-local: $*" >&2; }

fetch_jars() {
  if [ -f "$LIBS/.fetched" ] && [ "$LIBS/.fetched" -nt "$ROOT/kafka/pom.xml" ]; then return; fi
  command -v mvn >/dev/null || { say "Maven (mvn) is needed to fetch the broker's jars"; exit 1; }
  say "fetching Kafka broker jars from Maven Central into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  # jansi.noreset: else Maven (3.8.7 here) ends even a quiet run with stray escape codes
  MAVEN_OPTS="${MAVEN_OPTS:+$MAVEN_OPTS }-Djansi.noreset=true" \
    mvn -q -B -f "$ROOT/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIBS" -DincludeScope=runtime
  touch "$LIBS/.fetched"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

JAVA_OPTS=("-Xmx$HEAP" "-Xms128m" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$ROOT/kafka/log4j2.properties" "-Dkafka.logs.file=$LOG")
java_cmd() { java "${JAVA_OPTS[@]}" -cp "$LIBS/*" "$@"; }

write_config() {
  mkdir -p "$STATE/data"
  cat > "$STATE/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$STATE/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
CONF
}

up() {
  if pid="$(running_pid)"; then say "already running (pid $pid) on 127.0.0.1:$PORT"; return; fi
  if answers; then say "port $PORT is taken by another process; set KAFKA_PORT"; exit 1; fi
  command -v java >/dev/null || { say "Java 17+ is needed to run the broker"; exit 1; }
  fetch_jars
  write_config
  if [ ! -f "$STATE/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$STATE/server.properties" >/dev/null
    say "formatted storage in $STATE/data (cluster $cluster_id)"
  fi
  : > "$LOG"
  nohup java "${JAVA_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$STATE/server.properties" \
    >>"$STATE/stdout.log" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  local waited=0
  until answers; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      say "broker exited during start-up; last lines of $LOG:"; tail -n 20 "$LOG" "$STATE/stdout.log" >&2; exit 1
    fi
    if [ "$waited" -ge "$((TIMEOUT * 5))" ]; then say "broker did not answer within ${TIMEOUT}s"; exit 1; fi
    sleep 0.2; waited=$((waited + 1))
  done
  say "broker up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), state $STATE)"
}

down() {
  local pid
  if ! pid="$(running_pid)"; then say "not running"; rm -f "$PIDFILE"; return; fi
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then say "broker did not stop in 30s; killing"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  say "broker stopped"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if answers; then say "running (pid $pid) on 127.0.0.1:$PORT"; else say "starting (pid $pid)"; fi
  else
    say "not running (port $PORT)"; exit 3
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 up|down|status|fetch  (KAFKA_PORT, KAFKA_DIR, KAFKA_HEAP)" >&2; exit 2 ;;
esac
