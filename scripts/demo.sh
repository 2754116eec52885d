#!/bin/sh
# `make demo`: a daemon on a throwaway database serving workflows_example/, one order run end to
# end through the command line, then the commands to try next. The daemon is left running; a
# second `make demo` stops it and starts afresh on a new database.
#
# DURABLECTL_DEMO_DIR overrides where the database, config and notes go
# (default: ${TMPDIR:-/tmp}/durablectl-demo).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.venv/bin"
DIR="${DURABLECTL_DEMO_DIR:-${TMPDIR:-/tmp}/durablectl-demo}"
DB="$DIR/demo.db"
CONFIG="$DIR/durablectl.toml"

# explicit --db/--config below win over these, but a stray one must not reach the daemon
unset DURABLECTL_DB DURABLECTL_CONFIG

dctl() { "$BIN/durablectl" "$@" --db "$DB" --config "$CONFIG"; }
if [ -t 1 ]; then BOLD=$(printf '\033[1m'); PLAIN=$(printf '\033[0m'); else BOLD= PLAIN=; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
# echo a command as it would be typed (arguments with spaces or quotes in single quotes), run it
quote() {
    case $1 in
        *[!A-Za-z0-9_./:=@%+,-]*|'') printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf '%s' "$1" ;;
    esac
}
run() {
    printf '$ durablectl'
    for arg in "$@"; do printf ' %s' "$(quote "$arg")"; done
    printf '\n'
    dctl "$@"
}

if [ ! -x "$BIN/durablectl" ]; then
    echo "error: $BIN/durablectl is missing; run \`make install\` first" >&2
    exit 2
fi
mkdir -p "$DIR"
chmod 700 "$DIR"

# TOML basic strings: escape backslashes and quotes in the absolute path
WORKFLOWS=$(printf '%s' "$ROOT/workflows_example" | sed 's/\\/\\\\/g; s/"/\\"/g')
cat > "$CONFIG" <<EOF
# written by scripts/demo.sh (make demo); safe to delete with its folder
db = "demo.db"
workflows = "$WORKFLOWS"

[daemon]
grace_seconds = 5
EOF

# A previous demo's daemon: stop it, so this run gets the current code, config and a clean slate.
if dctl daemon status >/dev/null 2>&1; then
    say "stopping the previous demo daemon"
    dctl daemon stop
fi
rm -rf "$DB" "$DB-wal" "$DB-shm" "$DB.workers"

say "starting a daemon on $DB"
run daemon start
run workflows

say "an order, end to end: start, two signals, wait, show"
INPUT='{"id": "A-1", "amount": 30, "shipping": "express", "items": [{"sku": "MUG-01", "qty": 2}]}'
printf '$ ID=$(durablectl start orders.fulfil --input %s)\n' "$(quote "$INPUT")"
ID=$(dctl start orders.fulfil --input "$INPUT")
echo "$ID"
run signal "$ID" approved --payload '{"by": "ann"}'
run signal "$ID" delivered --payload '{"signed_by": "J. Doe"}'
run wait "$ID" --timeout 30s
run show "$ID"

say "a word count, with its input on stdin"
printf '$ printf ... | durablectl start pipeline.wordcount --input - --wait\n'
printf '{"text": "the cat sat\\nthe cat ran\\nthe end\\n", "top": 3}' \
    | dctl start pipeline.wordcount --input - --wait

say "the daemon keeps running; try next (paste as is)"
O="--db '$DB' --config '$CONFIG'"
cat <<EOF
  export PATH='$BIN':"\$PATH"
  durablectl daemon status $O
  durablectl list $O
  durablectl show $ID $O
  ID=\$(durablectl start users.onboard --input '{"email": "ann@example.com", "plan": "pro"}' $O)
  durablectl signal "\$ID" activated --payload '{"via": "web"}' $O
  durablectl status "\$ID" $O
  durablectl start reports.nightly --input '{"date": "2030-01-01"}' --wait $O
  durablectl daemon stop $O

  Or set them once: export DURABLECTL_DB='$DB' DURABLECTL_CONFIG='$CONFIG'
  The daemon's log: $(dctl daemon status --json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["log_file"])')
EOF
