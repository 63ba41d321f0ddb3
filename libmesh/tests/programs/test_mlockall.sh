#!/usr/bin/env bash
# mlockall(MCL_CURRENT | MCL_FUTURE) locks what the heap uses, not the
# arena's reservation: in a 512 MiB memory cgroup a program that locks
# itself and then allocates 64 MiB runs, and its VmLck stays close to what
# it allocated.  The cgroup is a child of this process's own memory cgroup
# (v1, as harness/sampler.py finds it; or v2); without one we may write to,
# the test says so and does nothing: unconfined, a library that locks its
# reservation would take the machine.
. "$(dirname "$0")/lib.sh"
child=$top/libmesh/tests/bin/limits_child
cg=""
v1_mount=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ {print $2; exit}' /proc/self/mounts)
v1_path=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3; exit}' /proc/self/cgroup)
v2_mount=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)
v2_path=$(awk -F: '$1 == "0" && $2 == "" {print $3; exit}' /proc/self/cgroup)
if [ -n "$v1_mount" ]; then
    parent=$v1_mount$v1_path
    [ -d "$parent" ] || parent=$v1_mount   # inside a cgroup namespace
    cg=$parent/mesh-mlockall-$$
    if mkdir "$cg" 2>/dev/null && echo $((512 << 20)) >"$cg/memory.limit_in_bytes" 2>/dev/null; then
        limit_file=memory.limit_in_bytes
    else
        rmdir "$cg" 2>/dev/null; cg=""
    fi
fi
if [ -z "$cg" ] && [ -n "$v2_mount" ] && grep -qw memory "$v2_mount$v2_path/cgroup.subtree_control" 2>/dev/null; then
    cg=$v2_mount$v2_path/mesh-mlockall-$$
    if mkdir "$cg" 2>/dev/null && echo $((512 << 20)) >"$cg/memory.max" 2>/dev/null; then
        limit_file=memory.max
    else
        rmdir "$cg" 2>/dev/null; cg=""
    fi
fi
if [ -z "$cg" ]; then
    echo "SKIP: no memory cgroup we may create a child in; mlockall is not tried unconfined"
    exit 0
fi
trap 'rmdir "$cg" 2>/dev/null; rm -rf "$scratch"' EXIT
echo "cgroup $cg, $limit_file $(cat "$cg/$limit_file")"
rc=0
out=$(sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
      env LD_PRELOAD=$LIBMESH timeout 60 "$child" mlock 64 2>"$scratch/err") || rc=$?
cat "$scratch/err"
echo "$out"
[ $rc -eq 0 ] || fail "mlockall and 64 MiB in a 512 MiB cgroup: exit $rc (137: killed by the OOM killer)"
locked=$(echo "$out" | awk '{print $2}'); used=$(echo "$out" | awk '{print $4}')
[ "$locked" -ge "$used" ] || fail "VmLck $locked kB is below the $used kB in use: MCL_FUTURE did not lock the heap"
[ "$locked" -le $((used * 5 / 4 + 32768)) ] || fail "VmLck $locked kB for $used kB in use"
echo ok
