#!/usr/bin/env bash
# Runs an MPI test binary with one rank per network namespace, over UCX tcp
# through veths capped by tbf (scripts/netns-cluster), and always tears the
# namespaces down. Exit 77 (ctest SKIP_RETURN_CODE) where namespaces are not
# permitted. Concurrent runs are serialised by a lock: they share the names.
#
#   tests/mpi/netns_test.sh NETNS_CLUSTER RANKS RATE BINARY [ARGS...]
# (MPIEXEC: the mpirun to use; default mpirun from PATH.)
set -euo pipefail

cluster="$1" ranks="$2" rate="$3"
shift 3

# Names of our own, so a bench cluster (hw-*) that is up is left alone.
export HW_NETNS_PREFIX=hwt HW_NETNS_SUBNET=10.78.0 HW_NETNS_STATE=/run/headwise-netns/hwt

if ! why=$("$cluster" check 2>&1); then
  echo "SKIP: network namespaces are not available here: $why"
  exit 77
fi

mkdir -p /run/lock
exec 9>/run/lock/headwise-netns-test.lock
flock -w 60 9 || { echo "netns_test: another netns test held the lock for 60 s" >&2; exit 1; }

trap '"$cluster" down >/dev/null 2>&1 || true' EXIT INT TERM
"$cluster" down >/dev/null 2>&1 || true
args=$("$cluster" up "$ranks" --rate "$rate")
echo "netns_test: mpirun $args $*"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMPI_MCA_btl # the namespace arguments choose btl self,tcp
# shellcheck disable=SC2086  # $args is a list of mpirun arguments
timeout 50 "${MPIEXEC:-mpirun}" --allow-run-as-root --oversubscribe $args "$@"
