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

mvn_copy_deps "$pom" "$jars_dir"
log "Spark dependencies ready: $venv, $jars_dir ($(cd "$jars_dir" && echo *.jar))"
