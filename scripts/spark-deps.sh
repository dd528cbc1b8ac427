#!/usr/bin/env bash
# Installs what the Spark interoperability tests need, so that Spark then runs
# with no network access:
#   - pyspark + delta-spark from PyPI into the project's Python environment
#     (scripts/requirements.txt);
#   - the delta-spark and delta-storage jars from Maven Central (Maven's
#     ~/.m2 caches them) into $MEDLAKE_SPARK_JARS_DIR
#     ($HOME/.cache/medlake/spark-jars), used through spark.jars.
# A no-op when both are in place. Needs Java 17 at run time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

pom="$SCRIPTS_DIR/spark/pom.xml"
jars_dir="${MEDLAKE_SPARK_JARS_DIR:-$MEDLAKE_CACHE/spark-jars}"

venv="$(medlake_venv)"

# The jars must match the Python package.
jar_version="$(sed -n 's:.*<delta.version>\(.*\)</delta.version>.*:\1:p' "$pom")"
py_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("delta-spark"))')"
[[ "$jar_version" == "$py_version" ]] \
    || die "delta-spark $py_version (requirements.txt) but delta jars $jar_version ($pom): align them"

stamp="$jars_dir/.pom.sha256"
want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "Spark dependencies ready: $venv, $jars_dir"
    exit 0
fi
command -v mvn >/dev/null || die "mvn not found (on Debian: apt-get install maven)"
log "fetching delta-spark $jar_version jars from Maven Central into $jars_dir"
mkdir -p "$MEDLAKE_CACHE"
tmp="$jars_dir.tmp" mvn_log="$MEDLAKE_CACHE/spark-jars-mvn.log"
rm -rf "$tmp"
if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
    tail -n 40 "$mvn_log" >&2
    die "mvn dependency:copy-dependencies failed (full log: $mvn_log)"
fi
printf '%s\n' "$want" >"$tmp/.pom.sha256"
rm -rf "$jars_dir"
mv "$tmp" "$jars_dir"
log "Spark dependencies ready: $venv, $jars_dir ($(ls "$jars_dir"/*.jar | xargs -n1 basename | tr '\n' ' '))"
