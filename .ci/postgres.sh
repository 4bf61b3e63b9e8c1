# Start a throw-away PostgreSQL for the test suite and export OMLKIT_TEST_PG_URL.  Source it:
#   source .ci/postgres.sh        (the server is stopped and its data removed when the shell exits)
# Idempotent: installs Debian's postgresql package only when no server binaries are found, and reuses
# a server this shell already started.  Any failure returns non-zero with a message (never a silent skip).

_oml_pg_fail() {
  echo "postgres.sh: $*" >&2
  if [ -n "${OML_PG_DIR:-}" ] && [ -f "$OML_PG_DIR/log" ]; then tail -n 30 "$OML_PG_DIR/log" >&2; fi
  _oml_pg_stop
  return 1
}

_oml_pg_start() {
  if [ -n "${OML_PG_DIR:-}" ] && [ -n "${OMLKIT_TEST_PG_URL:-}" ] && "$OML_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$OML_PG_PORT"; then
    echo "postgres.sh: reusing server on port $OML_PG_PORT"; return 0
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "postgres.sh: installing postgresql (apt-get)"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null || return 1
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$bin/pg_ctl" ] || { _oml_pg_fail "no pg_ctl after installing postgresql"; return 1; }
  fi
  OML_PG_BIN="$bin"
  # the server refuses to run as root: run it as the package's postgres user then
  local run=()
  if [ "$(id -u)" -eq 0 ]; then run=(runuser -u postgres --); fi
  OML_PG_DIR=$(mktemp -d /tmp/omlkit-pg.XXXXXX) || return 1
  chmod 755 "$OML_PG_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$OML_PG_DIR"
  OML_PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
                2>/dev/null || echo 5433)
  "${run[@]}" "$bin/initdb" -D "$OML_PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$OML_PG_DIR/initdb.log" 2>&1 \
    || { cat "$OML_PG_DIR/initdb.log" >&2; _oml_pg_fail "initdb failed"; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$OML_PG_DIR/data" -l "$OML_PG_DIR/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $OML_PG_PORT -c unix_socket_directories=$OML_PG_DIR -c fsync=off" start \
    >/dev/null || { _oml_pg_fail "server did not start on 127.0.0.1:$OML_PG_PORT"; return 1; }
  "$bin/createdb" -h 127.0.0.1 -p "$OML_PG_PORT" -U postgres omlkit_test \
    || { _oml_pg_fail "createdb failed"; return 1; }
  export OML_PG_BIN OML_PG_DIR OML_PG_PORT
  export OMLKIT_TEST_PG_URL="postgresql://postgres@127.0.0.1:$OML_PG_PORT/omlkit_test"
  trap _oml_pg_stop EXIT
  echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$OML_PG_PORT" \
       "(OMLKIT_TEST_PG_URL=$OMLKIT_TEST_PG_URL)"
}

_oml_pg_stop() {
  [ -n "${OML_PG_DIR:-}" ] || return 0
  local run=(); [ "$(id -u)" -eq 0 ] && run=(runuser -u postgres --)
  "${run[@]}" "$OML_PG_BIN/pg_ctl" -D "$OML_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$OML_PG_DIR"
  unset OML_PG_DIR OMLKIT_TEST_PG_URL
}

_oml_pg_start
